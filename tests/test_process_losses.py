"""AIRL dense reward, PRL and Math-Shepherd losses/advantages/labels against plain-numpy loops of their formulas
(METHOD.md section 4), with padding, groups of size 1 and all-correct / all-wrong groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repirl_jax.algorithms import losses

RNG = np.random.RandomState(7)


def _mask(lengths, t):
    m = np.zeros((len(lengths), t), np.float32)
    for i, n in enumerate(lengths):
        m[i, :n] = 1
    return m


def _sigm_log(z):
    return np.log(1 / (1 + np.exp(-z)))


def _group_mean_std(vals, group, i):
    """Mean and ddof-1 std of vals over row i's group; (0, 1) for a group of size 1."""
    rows = [j for j in range(len(group)) if group[j] == group[i]]
    if len(rows) == 1:
        return 0.0, 1.0
    v = np.array([vals[j] for j in rows], np.float64)
    return v.mean(), np.sqrt(((v - v.mean()) ** 2).sum() / (len(rows) - 1))


# --- numpy references (loops) ----------------------------------------------------------------------

def np_step_ends(tokens, m, delim, every):
    b, t = m.shape
    out = np.zeros((b, t), np.float32)
    for i in range(b):
        n = int(m[i].sum())
        for s in range(n):
            if (every > 0 and (s + 1) % every == 0) or (every == 0 and tokens[i, s] == delim) or s == n - 1:
                out[i, s] = 1
    return out


def np_airl_disc(z, m, label, smoothing):
    total, count, right = 0.0, 0.0, 0.0
    for i in range(z.shape[0]):
        y = 1 - smoothing / 2 if label[i] else smoothing / 2
        for t in range(z.shape[1]):
            if m[i, t]:
                total += -(y * _sigm_log(z[i, t]) + (1 - y) * _sigm_log(-z[i, t]))
                count += 1
                right += float((z[i, t] > 0) == bool(label[i]))
    return total / max(count, 1), right / max(count, 1)


def np_airl_adv(o, z, m, group, c, w_o, lo, hi, gamma, eps):
    b, t = m.shape
    r = np.zeros((b, t))
    rbar = np.zeros(b)
    for i in range(b):
        n = int(m[i].sum())
        for s in range(n):
            r[i, s] = c * min(max(z[i, s], lo), hi) + (w_o * o[i] if s == n - 1 else 0.0)
        rbar[i] = r[i, :n].sum() / max(n, 1)
    adv = np.zeros((b, t))
    for i in range(b):
        mean, std = _group_mean_std(rbar, group, i)
        n = int(m[i].sum())
        for s in range(n):
            adv[i, s] = sum(gamma ** (u - s) * (r[i, u] - mean) / (std + eps) for u in range(s, n))
    return adv


def np_prl(o, lp_old, lp_ref, m, ends, group, eta, w_o):
    b, t = m.shape
    adv = np.zeros((b, t))
    s_out = w_o * np.asarray(o, np.float64)
    for i in range(b):
        mean, std = _group_mean_std(s_out, group, i)
        a_out = (s_out[i] - mean) / (std + 1e-6)
        n = int(m[i].sum())
        for s in range(n):
            e = next(u for u in range(s, n) if ends[i, u])  # the step end closing token s
            adv[i, s] = a_out - sum(lp_old[i, j] - lp_ref[i, j] for j in range(e, n)) / eta
    return adv


def np_step_bce(z, ends, y):
    total, count = 0.0, 0
    for i in range(z.shape[0]):
        for t in range(z.shape[1]):
            if ends[i, t]:
                total += -(y[i, t] * _sigm_log(z[i, t]) + (1 - y[i, t]) * _sigm_log(-z[i, t]))
                count += 1
    return total / max(count, 1)


# --- tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("every", [0, 3])
def test_step_end_mask_matches_numpy(every):
    lengths = [7, 0, 10, 1, 4]
    m = _mask(lengths, 10)
    tokens = RNG.randint(0, 5, size=m.shape).astype(np.int32)  # delimiter 2 appears now and then
    tokens[:, -1] = 2  # a delimiter in the padding of short rows must not count
    got = np.asarray(losses.step_end_mask(jnp.asarray(tokens), jnp.asarray(m), 2, every))
    np.testing.assert_array_equal(got, np_step_ends(tokens, m, 2, every))
    assert got[1].sum() == 0 and got[3, 0] == 1  # empty row: no end; one-token row: its token ends it


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_airl_discriminator_loss_matches_numpy(smoothing):
    m = _mask([5, 3, 0, 6], 6)
    z = RNG.randn(4, 6).astype(np.float32) * 2
    label = np.array([1, 0, 1, 0], np.float32)
    loss, aux = losses.airl_discriminator_loss(jnp.asarray(z), jnp.asarray(m), jnp.asarray(label), smoothing)
    ref_loss, ref_acc = np_airl_disc(z, m, label, smoothing)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(aux["disc_acc"]), ref_acc, rtol=1e-6)
    # Micro-batches with the global token count add up to the whole batch's loss.
    halves = [losses.airl_discriminator_loss(jnp.asarray(z[s]), jnp.asarray(m[s]), jnp.asarray(label[s]),
                                             smoothing, num_tokens=m.sum())[0] for s in (slice(0, 2), slice(2, 4))]
    np.testing.assert_allclose(float(sum(halves)), ref_loss, rtol=1e-5)


def test_airl_discriminator_gradient_direction():
    """Label smoothing keeps the optimum finite: d loss / d z is 0 at sigmoid(z) = 0.95 for experts."""
    m = np.ones((1, 1), np.float32)
    g = jax.grad(lambda z: losses.airl_discriminator_loss(z, m, jnp.ones(1), 0.1)[0])(
        jnp.full((1, 1), np.log(0.95 / 0.05), jnp.float32))
    assert abs(float(g[0, 0])) < 1e-6


@pytest.mark.parametrize("groups,outcome", [
    ([0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 0, 0]),  # mixed group, all-wrong group
    ([0, 0, 1, 1, 2, 3], [1, 1, 0, 1, 1, 0]),  # all-correct group, groups of size 1
])
@pytest.mark.parametrize("w_o", [0.0, 1.0])
def test_airl_dense_advantages_match_numpy(groups, outcome, w_o):
    lengths = [5, 8, 2, 8, 1, 6]
    m = _mask(lengths, 8)
    z = (RNG.randn(6, 8) * 6).astype(np.float32)  # some beyond the clip range
    o = np.array(outcome, np.float32)
    g = np.array(groups, np.int32)
    got = np.asarray(losses.airl_dense_advantages(jnp.asarray(o), jnp.asarray(z), jnp.asarray(m), jnp.asarray(g),
                                                  c=0.5, outcome_weight=w_o, clip_min=-4.0, clip_max=3.0,
                                                  gamma=0.9, eps=1e-4))
    ref = np_airl_adv(o, z, m, g, 0.5, w_o, -4.0, 3.0, 0.9, 1e-4)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)
    assert (got[m == 0] == 0).all()


def test_airl_dense_singleton_group_passes_rewards_through():
    m = _mask([3], 4)
    z = np.array([[1.0, -2.0, 0.5, 9.0]], np.float32)
    got = np.asarray(losses.airl_dense_advantages(jnp.ones(1), jnp.asarray(z), jnp.asarray(m), jnp.zeros(1, jnp.int32),
                                                  c=1.0, outcome_weight=1.0, gamma=0.5, eps=0.0))
    r = [1.0, -2.0, 1.5]  # the outcome joins the last token; the padded 9.0 is ignored
    np.testing.assert_allclose(got[0], [r[0] + 0.5 * r[1] + 0.25 * r[2], r[1] + 0.5 * r[2], r[2], 0.0], rtol=1e-6)


@pytest.mark.parametrize("groups,outcome", [
    ([0, 0, 0, 0, 1, 1], [1, 0, 0, 1, 1, 1]),  # mixed, all-correct
    ([0, 0, 1, 1, 2, 3], [0, 0, 1, 0, 1, 0]),  # all-wrong, size-1 groups
])
@pytest.mark.parametrize("every", [0, 2])
def test_prl_advantages_match_numpy(groups, outcome, every):
    lengths = [6, 9, 3, 9, 1, 7]
    m = _mask(lengths, 9)
    tokens = RNG.randint(0, 4, size=m.shape).astype(np.int32)
    ends = np.asarray(losses.step_end_mask(jnp.asarray(tokens), jnp.asarray(m), 3, every))
    lp_old = -np.abs(RNG.randn(6, 9)).astype(np.float32)
    lp_ref = -np.abs(RNG.randn(6, 9)).astype(np.float32)
    o, g = np.array(outcome, np.float32), np.array(groups, np.int32)
    got = np.asarray(losses.prl_advantages(jnp.asarray(o), jnp.asarray(lp_old), jnp.asarray(lp_ref), jnp.asarray(m),
                                           jnp.asarray(ends), jnp.asarray(g), eta=2.0, outcome_weight=1.0))
    ref = np_prl(o, lp_old, lp_ref, m, ends, g, 2.0, 1.0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert (got[m == 0] == 0).all()
    # Constant within a step: tokens of one step share the value at its end.
    for i in range(6):
        n = lengths[i]
        for s in range(n - 1):
            if not ends[i, s]:
                assert got[i, s] == got[i, s + 1]


def test_prl_with_policy_equal_to_reference_is_the_outcome_advantage():
    m = _mask([4, 4, 4], 4)
    ends = np.asarray(losses.step_end_mask(jnp.zeros((3, 4), jnp.int32), jnp.asarray(m), 0, 0))
    lp = -np.abs(RNG.randn(3, 4)).astype(np.float32)
    got = np.asarray(losses.prl_advantages(jnp.array([1.0, 0.0, 0.0]), lp, lp, m, ends, jnp.zeros(3, jnp.int32)))
    a = np.array([1.0, 0.0, 0.0])
    a = (a - a.mean()) / (a.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(got, a[:, None] * m, rtol=1e-5)


def test_fill_back_matches_numpy():
    m = _mask([6, 3, 0], 6)
    ends = np.zeros((3, 6), np.float32)
    ends[0, [1, 5]] = 1
    ends[1, [0, 2]] = 1
    v = RNG.randn(3, 6).astype(np.float32)
    got = np.asarray(losses.fill_back(jnp.asarray(v), jnp.asarray(ends), jnp.asarray(m)))
    ref = np.zeros_like(v)
    for i in range(3):
        for t in range(int(m[i].sum())):
            ref[i, t] = v[i, next(u for u in range(t, 6) if ends[i, u])]
    np.testing.assert_allclose(got, ref)


def test_step_bce_matches_numpy_hard_and_soft():
    ends = np.zeros((3, 6), np.float32)
    ends[0, [2, 5]] = 1
    ends[1, [3]] = 1
    z = RNG.randn(3, 6).astype(np.float32) * 3
    for y in (RNG.randint(0, 2, size=(3, 6)).astype(np.float32), RNG.rand(3, 6).astype(np.float32)):
        loss, aux = losses.step_bce_loss(jnp.asarray(z), jnp.asarray(ends), jnp.asarray(y))
        np.testing.assert_allclose(float(loss), np_step_bce(z, ends, y), rtol=1e-5)
        acc = np.mean([(z[i, t] > 0) == (y[i, t] > 0.5) for i in range(3) for t in range(6) if ends[i, t]])
        np.testing.assert_allclose(float(aux["step_acc"]), acc, rtol=1e-6)
    # No step end at all: a finite zero loss.
    assert float(losses.step_bce_loss(jnp.asarray(z), jnp.zeros((3, 6)), jnp.asarray(y))[0]) == 0.0


def test_shepherd_labels_hard_and_soft():
    correct = RNG.randint(0, 2, size=(7, 4))
    correct[0] = 0  # all completions wrong
    correct[1] = 1  # all right
    for mode in ("soft", "hard"):
        got = losses.shepherd_labels(correct, mode)
        for s in range(7):
            ref = sum(correct[s]) / 4 if mode == "soft" else float(any(correct[s]))
            assert got[s] == pytest.approx(ref)
    assert losses.shepherd_labels(correct, "hard")[0] == 0 and losses.shepherd_labels(correct, "soft")[1] == 1
    with pytest.raises(ValueError):
        losses.shepherd_labels(correct, "medium")


def test_step_scores_and_min_step_score():
    r = np.array([1.0, 2.0, -1.0, 4.0, 0.5, 9.0])
    ends = np.array([0, 1, 0, 0, 1, 0])  # the token after the last end is ignored
    np.testing.assert_allclose(losses.step_scores(r, ends, "mean"), [1.5, 3.5 / 3])
    np.testing.assert_allclose(losses.step_scores(r, ends, "last"), [2.0, 0.5])
    assert losses.min_step_score(r, ends, "mean") == pytest.approx(3.5 / 3)
    assert losses.min_step_score(r, ends, "last") == 0.5
    assert losses.min_step_score(r, np.zeros(6), "mean") == float("-inf")
