"""Test-time-scaling selection and pass@k against hand-worked and brute-force references."""

import itertools
import math

import numpy as np
import pytest

from repirl_jax.evaluate import group_answers, min_step_scores, pass_at_k, select, summarize


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


def _np_min_step(rewards, ids, length, delim, reduce):
    """Split the trace after every delimiter token (and at its end); score each piece; take the minimum."""
    steps, cur = [], []
    for t in range(length):
        cur.append(t)
        if ids[t] == delim or t == length - 1:
            steps.append(cur)
            cur = []
    if not steps:
        return float("-inf")
    vals = [np.mean([rewards[t] for t in st]) if reduce == "mean" else rewards[st[-1]] for st in steps]
    return min(vals)


@pytest.mark.parametrize("reduce", ["mean", "last"])
def test_min_step_scores_match_a_loop_over_steps(reduce):
    rng = np.random.RandomState(3)
    lengths = [9, 4, 0, 12, 1]
    ids = rng.randint(0, 4, size=(5, 12)).astype(np.int32)  # delimiter 3
    mask = np.zeros((5, 12), np.float32)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    r = rng.randn(5, 12).astype(np.float32) * mask
    got = min_step_scores(r, ids, mask, 3, 0, reduce)
    for i, n in enumerate(lengths):
        ref = _np_min_step(r[i], ids[i], n, 3, reduce)
        assert got[i] == pytest.approx(ref, rel=1e-5) if np.isfinite(ref) else got[i] == ref


def test_rerank_by_mean_reward_and_by_minimum_step_pick_different_traces():
    """Trace 0 has the higher mean token reward but one bad step; trace 1 is uniformly fair."""
    delim = 9
    ids = np.array([[1, 9, 1, 9, 1, 9], [1, 9, 1, 9, 1, 9]], np.int32)
    r = np.array([[3.0, 3.0, -2.0, -2.0, 3.0, 3.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]], np.float32)
    m = np.ones_like(r)
    mean = (r * m).sum(1) / m.sum(1)
    low = min_step_scores(r, ids, m, delim)
    np.testing.assert_allclose(low, [-2.0, 0.5])
    labels, answers = [0, 1], ["1", "2"]
    assert select("best_of_n", labels, answers, mean) == 0
    assert select("min_step", labels, answers, low) == 1


def test_vote_transforms():
    from repirl_jax.evaluation.reports import vote_weights
    s = np.array([-3.0, -1.0, 0.5, 0.5])
    np.testing.assert_allclose(vote_weights(s, "none"), s)
    np.testing.assert_allclose(vote_weights(s, "sigmoid"), 1 / (1 + np.exp(-s)))
    np.testing.assert_allclose(vote_weights(s, "exp"), np.exp(s - 0.5))
    np.testing.assert_allclose(vote_weights(s, "rank"), [1, 2, 3.5, 3.5])
    # mostly negative scores: the raw sum punishes the large group "7", a positive transform does not
    answers = ["7", "7", "7", "3"]
    labels = group_answers(answers, _eq)
    prm = [-1.0, -1.2, -0.9, -1.5]
    assert answers[select("prm_weighted", labels, answers, prm)] == "3"
    for t in ("sigmoid", "exp", "rank"):
        assert answers[select(f"prm_weighted:{t}", labels, answers, prm)] == "7", t
    with pytest.raises(ValueError):
        select("prm_weighted:cube", labels, answers, prm)
