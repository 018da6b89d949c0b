"""Test-time-scaling selection and pass@k against hand-worked and brute-force references."""

import itertools
import math

import numpy as np
import pytest

from repirl_jax.evaluate import group_answers, pass_at_k, select, summarize


def _eq(pairs):  # numeric equivalence stand-in for math-verify
    return [abs(float(a) - float(b)) < 1e-9 for a, b in pairs]


@pytest.mark.parametrize("n,c,k", [(4, 0, 1), (4, 1, 1), (4, 2, 2), (8, 3, 4), (16, 5, 8), (5, 5, 3)])
def test_pass_at_k_equals_brute_force_over_subsets(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = np.mean([any(outcomes[i] for i in s) for s in subsets])
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_grouping_by_equivalence_and_none_singletons():
    answers = ["0.5", None, "1", "0.50", "2", None, "1.0"]
    labels = group_answers(answers, _eq)
    assert labels[0] == labels[3] and labels[2] == labels[6]
    assert len({labels[0], labels[2], labels[4]}) == 3
    assert labels[1] != labels[5] and labels[1] not in labels[:1] + labels[2:5]


def test_majority_best_of_n_and_prm_weighted():
    answers = ["3", "3", "7", "7", "7", "5"]
    labels = group_answers(answers, _eq)
    prm = [0.9, 0.8, 0.1, 0.2, 0.1, 0.95]
    assert answers[select("majority", labels, answers)] == "7"  # 3 votes beat 2
    assert select("best_of_n", labels, answers, prm) == 5  # highest single score
    # PRM-weighted: group "3" sums 1.7 > group "7" 0.4 > group "5" 0.95 -> "3", its best member (index 0)
    assert select("prm_weighted", labels, answers, prm) == 0


def test_answerless_samples_never_win_a_vote():
    answers = [None, None, None, "4"]
    labels = group_answers(answers, _eq)
    assert select("majority", labels, answers) == 3
    assert select("prm_weighted", labels, answers, [5.0, 5.0, 5.0, 0.1]) == 3


def test_summary_of_greedy_and_sampled_rows():
    rows = [{"scores": [1.0]}, {"scores": [0.0]}, {"scores": [1.0]}, {"scores": [1.0]}]
    assert summarize(rows, 1, ()) == {"n": 4, "pass@1": 0.75}
    rows = [{"scores": [1.0, 0.0, 0.0, 1.0], "selected": {"majority": 1.0}},
            {"scores": [0.0, 0.0, 0.0, 0.0], "selected": {"majority": 0.0}}]
    s = summarize(rows, 4, ("majority",))
    assert s["pass@1"] == pytest.approx(0.25) and s["pass@4"] == pytest.approx(0.5)
    assert s["pass@2"] == pytest.approx((1 - math.comb(2, 2) / math.comb(4, 2)) / 2)
    assert s["majority@4"] == 0.5
