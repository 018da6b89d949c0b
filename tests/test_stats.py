import math

import numpy as np
import pytest

from repirl_jax.evaluation.stats import paired_interval, t975, verdict


def test_paired_interval_matches_the_t_formula():
    a = np.array([0.62, 0.70, 0.55, 0.66, 0.71])
    b = np.array([0.60, 0.64, 0.54, 0.60, 0.65])
    d = a - b
    half = 2.776 * d.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    lo, m, hi = paired_interval(a, b)
    np.testing.assert_allclose([lo, m, hi], [d.mean() - half, d.mean(), d.mean() + half])
    assert verdict(lo, hi) == "holds"  # every seed gains: mean 0.042, half-width 0.031
    assert verdict(*paired_interval(b, a)[::2]) == "does not hold"
    assert verdict(*paired_interval([0.1, -0.1, 0.05], [0, 0, 0])[::2]) == "inconclusive"
    assert math.isnan(paired_interval([0.5])[0]) and verdict(float("nan"), float("nan")) == "inconclusive"


def test_t_quantiles():
    assert t975(1) == 12.706 and t975(4) == 2.776 and t975(200) == 1.96
    with pytest.raises(ValueError):
        t975(0)


def test_claims_table_pairs_seeds_and_reads_dotted_fields():
    from repirl_jax.evaluation.stats import claims_table, field
    results = {
        "a": [{"seed": s, "acc": 0.6 + 0.01 * s, "rerank": {"16": {"vote": 0.7, "maj": 0.6}}, "auc": 0.7 + 0.01 * s}
              for s in range(5)],
        "b": [{"seed": s, "acc": 0.5 + 0.012 * s} for s in range(1, 5)],  # seed 0 missing: 4 pairs
    }
    assert field(results["a"][0], "rerank.16.vote") == 0.7 and field({"rerank": {16: {"x": 1}}}, "rerank.16.x") == 1
    assert field(results["a"][0], "rerank.8.vote") is None
    table = claims_table(results, [("a beats b", "a", "acc", "b", "acc"), ("vote", "a", "rerank.16.vote", "a",
                                   "rerank.16.maj"), ("auc", "a", "auc", None, None), ("absent", "c", "acc", "b", "acc")])
    lines = table.strip().splitlines()
    d = np.array([0.6 + 0.01 * s - (0.5 + 0.012 * s) for s in range(1, 5)])
    lo, m, hi = paired_interval(0.6 + 0.01 * np.arange(1, 5), 0.5 + 0.012 * np.arange(1, 5))
    assert abs(m - d.mean()) < 1e-12
    assert lines[2] == f"| a beats b | 4 | {100 * m:+.1f} pts | [{100 * lo:+.1f}, {100 * hi:+.1f}] | holds |"
    assert lines[3].startswith("| vote | 5 | +10.0 pts |")  # no spread: a zero-width interval above 0
    assert lines[4].startswith("| auc | 5 | +0.220 |") and lines[4].endswith("| holds |")
    assert lines[5] == "| absent | 0 | - | - | not run |"
