"""Issue-11 options for rePIRL's importance weights (losses.transform_log_weights, truncate_weights,
irl_weights) against plain numpy; the defaults must be the paper's weights exactly."""
import jax.numpy as jnp
import numpy as np
import pytest

from repirl_jax.algorithms import losses


def _np_weights(R, logp, m, neg, norm="none", temp=1.0, cap=0.0):
    lw = R - (logp * m).sum(1)
    if norm == "per_token":
        lw = lw / np.maximum(m.sum(1), 1)
    lw = lw / temp
    w = np.zeros_like(lw)
    idx = neg > 0
    e = np.exp(lw[idx] - lw[idx].max())
    w[idx] = e / e.sum()
    if cap > 0:
        w = np.where(idx, np.minimum(w, cap / idx.sum()), 0.0)
        w = w / w.sum()
    return w


@pytest.mark.parametrize("norm,temp,cap", [("none", 1.0, 0.0), ("per_token", 1.0, 0.0), ("none", 4.0, 0.0),
                                           ("none", 1.0, 2.0), ("per_token", 2.0, 3.0)])
def test_irl_weights_match_numpy(norm, temp, cap):
    rng = np.random.default_rng(0)
    b, t = 10, 12
    m = (np.arange(t)[None] < rng.integers(3, t + 1, b)[:, None]).astype(np.float32)
    logp = (-rng.exponential(1.0, (b, t)) * m).astype(np.float32)
    R = rng.normal(size=b).astype(np.float32)
    neg = (rng.random(b) < 0.7).astype(np.float32)
    neg[0] = 1
    got = np.asarray(losses.irl_weights(jnp.asarray(R), jnp.asarray(logp), jnp.asarray(m), jnp.asarray(neg),
                                        None, "batch", True, norm, temp, cap))
    np.testing.assert_allclose(got, _np_weights(R, logp, m, neg, norm, temp, cap), rtol=1e-5, atol=1e-7)
    assert abs(got.sum() - 1) < 1e-5 and (got[neg == 0] == 0).all()
    if cap > 0:  # truncation only moves mass off the largest weights
        assert got.max() <= _np_weights(R, logp, m, neg, norm, temp).max() + 1e-7


def test_defaults_are_the_paper():
    rng = np.random.default_rng(1)
    b, t = 8, 6
    m = np.ones((b, t), np.float32)
    logp = -rng.exponential(1.0, (b, t)).astype(np.float32)
    r = rng.normal(size=(b, t)).astype(np.float32)
    pos = np.array([1, 1, 0, 0, 0, 0, 1, 0], np.float32)
    neg = 1 - pos
    a = losses.repirl_reward_loss(r, m, logp, pos, neg)
    bb = losses.repirl_reward_loss(r, m, logp, pos, neg, None, "batch", True, "none", 1.0, 0.0)
    assert float(a.loss) == float(bb.loss) and float(a.ess) == float(bb.ess)
    # tempering flattens the weights: the effective sample size grows toward |N|
    hot = losses.repirl_reward_loss(r, m, logp, pos, neg, None, "batch", True, "none", 100.0, 0.0)
    assert float(a.ess) < float(hot.ess) <= neg.sum() + 1e-4
    with pytest.raises(ValueError, match="log_weight_norm"):
        losses.transform_log_weights(jnp.zeros(2), jnp.ones((2, 2)), "bogus")
    with pytest.raises(ValueError, match="temperature"):
        losses.transform_log_weights(jnp.zeros(2), jnp.ones((2, 2)), "none", 0.0)
