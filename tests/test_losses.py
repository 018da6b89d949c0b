"""Every loss and estimator against a plain-numpy implementation of METHOD.md's formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repirl_jax.algorithms import losses

RNG = np.random.RandomState(0)


def _mask(lengths, t, prompt=0):
    m = np.zeros((len(lengths), t), np.float32)
    for i, n in enumerate(lengths):
        m[i, prompt:prompt + n] = 1
    return m


# --- numpy references ------------------------------------------------------------------------------

def np_repirl(r, m, logp_old, pos, neg, group, scope="batch", iw=True):
    R = (r * m).sum(1)
    rbar = R / np.maximum(m.sum(1), 1)
    P, N = np.flatnonzero(pos), np.flatnonzero(neg)
    w = np.zeros(len(r))
    if len(N):
        logw = R - (logp_old * m).sum(1)
        if not iw:
            w[N] = 1 / len(N)
        elif scope == "batch":
            e = np.exp(logw[N] - logw[N].max())
            w[N] = e / e.sum()
        else:
            groups = sorted({group[j] for j in N})
            for g in groups:
                idx = [j for j in N if group[j] == g]
                e = np.exp(logw[idx] - logw[idx].max())
                w[idx] = e / e.sum() / len(groups)
    neg_term = (w * rbar).sum() if len(N) else 0.0
    pos_term = rbar[P].mean() if len(P) else 0.0
    ess = 1 / (w ** 2).sum() if len(N) else 0.0
    return neg_term - pos_term, ess, w


def np_rloo_token(o, r, m, group, c, whiten=True):
    b, t = m.shape
    last = np.zeros_like(m)
    for i in range(b):
        idx = np.flatnonzero(m[i])
        if len(idx):
            last[i, idx[-1]] = 1
    out = np.zeros_like(m)
    for g in set(group):
        rows = [i for i in range(b) if group[i] == g]
        n = len(rows)
        for i in rows:
            if n == 1:
                out[i] = o[i] * last[i] + c * r[i] * m[i]
                continue
            others = [j for j in rows if j != i]
            o_adv = o[i] - np.mean([o[j] for j in others])  # o_i - mean_{j != i} o_j
            rbar = [(c * r[j] * m[j]).sum() / max(m[j].sum(), 1) for j in rows]
            p = (c * r[i] * n / (n - 1) - sum(rbar) / (n - 1)) * m[i]
            out[i] = o_adv * last[i] + p
    g = np.zeros_like(out)
    for i in range(b):
        acc = 0.0
        for s in reversed(range(t)):
            acc += out[i, s] * m[i, s]
            g[i, s] = acc
    if not whiten:
        return g * m
    vals = g[m > 0]
    return (g - vals.mean()) / np.sqrt(vals.var() + 1e-8) * m


# --- rePIRL reward loss ------------------------------------------------------------------------------

CASES = {
    "mixed": ([1, 0, 0, 1, 0, 1, 1, 0], [0, 1, 1, 0, 1, 0, 0, 1]),
    "all_correct": ([1] * 8, [0] * 8),
    "all_wrong": ([1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1]),  # experts only as positives
    "no_positives": ([0] * 8, [1] * 8),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("scope,iw", [("batch", True), ("prompt", True), ("batch", False)])
def test_repirl_loss_matches_numpy(case, scope, iw):
    pos, neg = (np.array(x, np.float32) for x in CASES[case])
    t = 12
    m = _mask([12, 3, 7, 1, 9, 12, 5, 4], t)
    r = RNG.normal(size=(8, t)).astype(np.float32)
    logp_old = -np.abs(RNG.normal(size=(8, t))).astype(np.float32) * 2
    group = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    out = losses.repirl_reward_loss(r, m, logp_old, pos, neg, group, scope, iw)
    ref_loss, ref_ess, _ = np_repirl(r, m, logp_old, pos, neg, group, scope, iw)
    np.testing.assert_allclose(float(out.loss), ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(out.ess), ref_ess, rtol=1e-5)
    assert float(out.num_pos) == pos.sum() and float(out.num_neg) == neg.sum()
    assert np.isfinite(float(out.loss)) and float(out.skipped) == 0


def test_repirl_both_sets_empty_is_skipped_and_finite():
    m = _mask([3, 4], 5)
    out = losses.repirl_reward_loss(np.ones((2, 5)), m, np.zeros((2, 5)), np.zeros(2), np.zeros(2))
    assert float(out.loss) == 0.0 and float(out.skipped) == 1.0 and float(out.ess) == 0.0


def test_repirl_gradient_is_the_weighted_difference_of_eq3():
    """d L / d r[j, t] = w_hat_j m/|tau_j| on negatives and -1/|P| m/|tau_i| on positives (Eq. 3 with rbar)."""
    t = 10
    m = _mask([10, 4, 6, 2, 8, 3], t)
    r = RNG.normal(size=(6, t)).astype(np.float32)
    logp_old = -np.abs(RNG.normal(size=(6, t))).astype(np.float32)
    pos = np.array([1, 0, 1, 0, 0, 1], np.float32)
    neg = 1 - pos
    grad = jax.grad(lambda r: losses.repirl_reward_loss(r, m, logp_old, pos, neg).loss)(jnp.asarray(r))
    _, _, w = np_repirl(r, m, logp_old, pos, neg, np.zeros(6, int))
    lengths = m.sum(1, keepdims=True)
    expected = (w[:, None] * neg[:, None] - pos[:, None] / pos.sum()) * m / lengths
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-7)
    # Importance weights favour the negative with the largest R - log pi_old, and carry no gradient.
    assert np.argmax(w) == np.argmax(np.where(neg > 0, (r * m).sum(1) - (logp_old * m).sum(1), -np.inf))


def test_long_responses_make_weights_near_one_hot_without_overflow():
    t = 3000
    m = np.ones((4, t), np.float32)
    logp_old = np.full((4, t), -2.0, np.float32)
    logp_old[1] = -2.01  # log w differs by 30 between rows 0 and 1
    r = np.zeros((4, t), np.float32)
    out = losses.repirl_reward_loss(r, m, logp_old, np.zeros(4), np.ones(4))
    assert np.isfinite(float(out.loss)) and 1.0 <= float(out.ess) < 1.01


# --- advantages ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [[0, 0, 0, 0, 1, 1, 1, 1], [0, 1, 0, 1, 2, 2, 3, 4], [0] * 8])
@pytest.mark.parametrize("whiten", [True, False])
def test_rloo_token_advantages_match_numpy(groups, whiten):
    t = 9
    m = _mask([9, 2, 5, 7, 1, 9, 4, 6], t, prompt=0)
    o = np.array([1, 0, 1, 1, 0, 0, 1, 0], np.float32)
    r = RNG.normal(size=(8, t)).astype(np.float32)
    group = np.array(groups)
    got = losses.rloo_advantages(o, r, m, group, c=0.05, whiten=whiten)
    np.testing.assert_allclose(np.asarray(got), np_rloo_token(o, r, m, groups, 0.05, whiten), rtol=1e-4, atol=1e-5)


def test_rloo_outcome_stream_is_leave_one_out_and_c0_is_plain_rloo():
    m = _mask([3, 3, 3, 3], 4, prompt=1)
    o = np.array([1.0, 0.0, 0.0, 1.0])
    adv = losses.rloo_advantages(o, np.zeros((4, 4)), m, np.zeros(4, int), c=0.0, whiten=False)
    # Every response token carries o_i - mean_{j != i} o_j (return-to-go of a last-token reward).
    expected = np.array([1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3])[:, None] * m
    np.testing.assert_allclose(np.asarray(adv), expected, atol=1e-6)


def test_rloo_sequence_mode_and_all_equal_groups():
    m = _mask([4, 2, 3, 1], 5)
    o = np.array([1.0, 1.0, 0.0, 0.0])
    r = RNG.normal(size=(4, 5)).astype(np.float32)
    group = np.array([0, 0, 1, 1])
    got = np.asarray(losses.rloo_advantages(o, r, m, group, c=0.1, mode="sequence"))
    s = o + 0.1 * (r * m).sum(1)
    ref = np.array([s[0] - s[1], s[1] - s[0], s[2] - s[3], s[3] - s[2]])
    np.testing.assert_allclose(got, ref[:, None] * m, rtol=1e-5, atol=1e-6)
    # All-correct and all-wrong groups with c = 0: zero advantage everywhere (no signal, no NaN).
    zero = losses.rloo_advantages(o, r, m, group, c=0.0, whiten=False)
    np.testing.assert_array_equal(np.asarray(zero), np.zeros_like(m))
    whitened = losses.rloo_advantages(o, r, m, group, c=0.0)
    assert np.isfinite(np.asarray(whitened)).all()


def test_grpo_matches_numpy():
    m = _mask([4, 2, 3, 1, 5, 5], 5)
    o = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    r = RNG.normal(size=(6, 5)).astype(np.float32)
    group = np.array([0, 0, 0, 1, 1, 2])
    got = np.asarray(losses.grpo_advantages(o, r, m, group, c=0.1))
    s = o + 0.1 * (r * m).sum(1)
    ref = np.zeros(6)
    for g in set(group):
        idx = group == g
        if idx.sum() == 1:
            ref[idx] = s[idx] / (1 + 1e-6)
        else:
            ref[idx] = (s[idx] - s[idx].mean()) / (s[idx].std(ddof=1) + 1e-6)
    np.testing.assert_allclose(got, ref[:, None] * m, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.95)])
def test_gae_matches_numpy(gamma, lam):
    m = _mask([6, 3, 1], 6)
    rew = RNG.normal(size=(3, 6)).astype(np.float32) * m
    val = RNG.normal(size=(3, 6)).astype(np.float32)
    adv, ret = losses.gae_advantages(rew, val, m, gamma, lam)
    ref = np.zeros((3, 6))
    for i in range(3):
        n = int(m[i].sum())
        last = 0.0
        for t in reversed(range(n)):
            nv = val[i, t + 1] if t + 1 < n else 0.0
            delta = rew[i, t] + gamma * nv - val[i, t]
            last = delta + gamma * lam * last
            ref[i, t] = last
    np.testing.assert_allclose(np.asarray(adv), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), (ref + val) * m, rtol=1e-5, atol=1e-5)
    if gamma == lam == 1.0:  # gamma = lambda = 1: advantage = return-to-go - V
        rtg = np.cumsum(rew[:, ::-1], axis=1)[:, ::-1]
        np.testing.assert_allclose(np.asarray(adv), (rtg - val) * m, rtol=1e-5, atol=1e-5)


def test_value_loss_matches_numpy():
    m = _mask([4, 2], 4)
    v, v_old, g = (RNG.normal(size=(2, 4)).astype(np.float32) for _ in range(3))
    got = float(losses.value_loss(v, v_old, g, m, clip=0.2))
    clipped = v_old + np.clip(v - v_old, -0.2, 0.2)
    ref = 0.5 * (np.maximum((v - g) ** 2, (clipped - g) ** 2) * m).sum() / m.sum()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


# --- policy loss --------------------------------------------------------------------------------------

def np_ppo(logp, logp_old, adv, m, ent, ref, kl_coef, num_tokens):
    ratio = np.exp(np.clip(logp - logp_old, -20, 20))
    pg = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.8, 1.2))
    pg = np.where(adv < 0, np.minimum(pg, -adv * 3.0), pg)
    loss = (pg * m).sum() / num_tokens - 0.001 * (ent * m).sum() / num_tokens
    d = ref - logp
    return loss + kl_coef * ((np.exp(d) - d - 1) * m).sum() / num_tokens


def test_ppo_loss_matches_numpy_including_dual_clip_and_kl():
    m = _mask([8, 3, 6, 1], 8)
    logp_old = -np.abs(RNG.normal(size=(4, 8))).astype(np.float32)
    logp = logp_old + RNG.normal(size=(4, 8)).astype(np.float32) * 0.8  # ratios far outside the clip
    adv = RNG.normal(size=(4, 8)).astype(np.float32) * 2
    ent = np.abs(RNG.normal(size=(4, 8))).astype(np.float32)
    ref = logp + RNG.normal(size=(4, 8)).astype(np.float32) * 0.1
    for num_tokens in (None, 40.0):
        n = m.sum() if num_tokens is None else num_tokens
        got, metrics = losses.ppo_policy_loss(logp, logp_old, adv, m, ent, logp_ref_bt=ref, kl_coef=0.01,
                                              num_tokens=num_tokens)
        np.testing.assert_allclose(float(got), np_ppo(logp, logp_old, adv, m, ent, ref, 0.01, n), rtol=1e-5)
    # The dual clip binds somewhere in this batch (the test exercises it).
    ratio = np.exp(logp - logp_old)
    assert ((adv < 0) & (ratio > 3.0) & (m > 0)).any()
    assert 0 < float(metrics["clip_frac"]) < 1


def test_ppo_gradient_is_policy_gradient_inside_the_clip():
    m = _mask([5], 5)
    logp_old = np.log(np.full((1, 5), 0.3, np.float32))
    adv = np.array([[1.0, -2.0, 0.5, 0.0, 3.0]], np.float32)
    g = jax.grad(lambda lp: losses.ppo_policy_loss(lp, logp_old, adv, m, entropy_coef=0.0)[0])(jnp.asarray(logp_old))
    np.testing.assert_allclose(np.asarray(g), -adv / 5, rtol=1e-6)  # ratio 1: d/dlogp (-A r) = -A


# --- baselines ----------------------------------------------------------------------------------------

def test_bc_prime_kto_match_numpy():
    m = _mask([4, 2, 3], 4)
    logp = -np.abs(RNG.normal(size=(3, 4))).astype(np.float32)
    ref = -np.abs(RNG.normal(size=(3, 4))).astype(np.float32)
    np.testing.assert_allclose(float(losses.bc_loss(logp, m)), -(logp * m).sum() / m.sum(), rtol=1e-6)

    o = np.array([1.0, 0.0, 1.0])
    z = 0.05 * ((logp - ref) * m).sum(1)
    p = 1 / (1 + np.exp(-z))
    bce = -(o * np.log(p) + (1 - o) * np.log(1 - p)).mean()
    np.testing.assert_allclose(float(losses.prime_implicit_prm_loss(logp, ref, m, o)[0]), bce, rtol=1e-5)

    d, u = np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    r = ((logp - ref) * m).sum(1)
    z0 = max(r.mean(), 0.0)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    kto = (d * (1 - sig(0.1 * (r - z0))) + u * (1 - sig(0.1 * (z0 - r)))).sum() / 3
    np.testing.assert_allclose(float(losses.kto_loss(logp, ref, m, d, u)[0]), kto, rtol=1e-5)


def test_prime_loss_ignores_rows_of_filtered_prompts():
    """A batch with masked (filtered) prompts gives the same PRIME loss, accuracy and gradient as the batch
    without them, equal to the numpy mean BCE over the kept rows; split into micro-batches with the whole
    mini-batch's kept-row count, the parts add up to the same loss and gradient."""
    kept_m = _mask([4, 2, 3, 1], 4)
    logp = -np.abs(RNG.normal(size=(6, 4))).astype(np.float32)
    ref = -np.abs(RNG.normal(size=(6, 4))).astype(np.float32)
    o = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], np.float32)
    keep = np.array([1, 0, 1, 1, 0, 1], np.float32)  # rows 1 and 4: prompts the accuracy filter dropped
    m = np.zeros((6, 4), np.float32)
    m[keep > 0] = kept_m  # as the trainer masks them: response mask 0 on filtered rows
    k = keep > 0

    def loss(lp, rows=slice(None), mask=m, kp=keep, num_rows=None):
        return losses.prime_implicit_prm_loss(lp, ref[rows], mask, o[rows], 0.05, kp, num_rows)

    full, aux = loss(jnp.asarray(logp))
    alone, aux_alone = losses.prime_implicit_prm_loss(logp[k], ref[k], kept_m, o[k], 0.05)
    z = 0.05 * ((logp[k] - ref[k]) * kept_m).sum(1)
    p = 1 / (1 + np.exp(-z))
    bce = -(o[k] * np.log(p) + (1 - o[k]) * np.log(1 - p)).mean()
    np.testing.assert_allclose(float(full), bce, rtol=1e-5)
    np.testing.assert_allclose(float(full), float(alone), rtol=1e-6)
    np.testing.assert_allclose(float(aux["prm_acc"]), float(aux_alone["prm_acc"]), rtol=1e-6)
    np.testing.assert_allclose(float(aux["prm_acc"]), ((z > 0) == (o[k] > 0.5)).mean(), rtol=1e-6)
    g = np.asarray(jax.grad(lambda lp: loss(lp)[0])(jnp.asarray(logp)))
    g_alone = np.asarray(jax.grad(lambda lp: losses.prime_implicit_prm_loss(lp, ref[k], kept_m, o[k])[0])(
        jnp.asarray(logp[k])))
    np.testing.assert_allclose(g[k], g_alone, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(g[~k], 0.0)
    # Two micro-batches of 3 rows with the mini-batch's kept-row count (4) add up to the whole.
    parts = [slice(0, 3), slice(3, 6)]
    total = sum(float(loss(jnp.asarray(logp[r]), r, m[r], keep[r], keep.sum())[0]) for r in parts)
    np.testing.assert_allclose(total, float(full), rtol=1e-6)
    g_parts = np.concatenate([np.asarray(jax.grad(lambda lp: loss(lp, r, m[r], keep[r], keep.sum())[0])(
        jnp.asarray(logp[r]))) for r in parts])
    np.testing.assert_allclose(g_parts, g, rtol=1e-6, atol=1e-9)


def test_masked_whiten_and_returns_to_go():
    m = _mask([3, 2], 4)
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    w = np.asarray(losses.masked_whiten(x, m))
    assert abs(w[m > 0].mean()) < 1e-5 and abs(w[m > 0].std() - 1) < 1e-3 and (w[m == 0] == 0).all()
    g = np.asarray(losses.returns_to_go(x, m, gamma=0.9))
    ref = np.zeros_like(x)
    for i in range(2):
        acc = 0.0
        for t in reversed(range(4)):
            acc = x[i, t] * m[i, t] + 0.9 * acc
            ref[i, t] = acc
    np.testing.assert_allclose(g, ref, rtol=1e-5)


def test_micro_batch_accumulation_with_fixed_coefficients_equals_the_full_loss_gradient():
    """The trainer accumulates sum_j coef_j rbar_j over micro-batches with coef = w_hat on N, -1/|P| on P
    computed once per mini-batch; since w_hat carries no gradient this equals grad L_phi exactly."""
    t = 8
    m = _mask([8, 2, 5, 7, 3, 8, 6, 1], t)
    r = RNG.normal(size=(8, t)).astype(np.float32)
    logp_old = -np.abs(RNG.normal(size=(8, t))).astype(np.float32)
    pos = np.array([1, 0, 0, 1, 1, 0, 0, 1], np.float32)
    neg = 1 - pos
    group = np.repeat(np.arange(4), 2)
    full = jax.grad(lambda r: losses.repirl_reward_loss(r, m, logp_old, pos, neg, group, "prompt").loss)(r)
    R, _ = losses.trajectory_scores(r, m)
    w = losses.normalized_weights(losses.importance_log_weights(R, logp_old, m), neg, group, "prompt")
    coef = np.where(neg > 0, w, 0) - pos / pos.sum()

    def micro(r_part, m_part, c_part):
        return jnp.sum(c_part * losses.trajectory_scores(r_part, m_part)[1])
    parts = [jax.grad(micro)(r[s:s + 2], m[s:s + 2], coef[s:s + 2]) for s in range(0, 8, 2)]
    np.testing.assert_allclose(np.concatenate(parts), np.asarray(full), rtol=1e-5, atol=1e-7)


def test_auroc_matches_pairwise_definition():
    from repirl_jax.evaluation.prm_eval import auroc
    scores = RNG.normal(size=40).round(1)  # rounding makes ties
    labels = RNG.rand(40) > 0.4
    pos, neg = scores[labels], scores[~labels]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(scores, labels) == pytest.approx(pairwise)
    assert np.isnan(auroc([1.0, 2.0], [True, True]))


def test_within_position_auroc_is_the_pairwise_definition_among_equal_positions():
    from repirl_jax.evaluation.prm_eval import auroc, within_position_auroc
    position = RNG.randint(0, 4, size=60)
    labels = RNG.rand(60) < 0.9 - 0.2 * position  # wrong steps sit late
    scores = RNG.normal(size=60).round(1) - position  # plus a score that falls with position
    pairs = [(scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j]) for i in range(60) for j in range(60)
             if labels[i] and not labels[j] and position[i] == position[j]]
    assert within_position_auroc(scores, labels, position) == pytest.approx(np.mean(pairs))
    # position alone: a high pooled AUROC, exactly 0.5 (ties) within each position
    assert auroc(-position, labels) > 0.6
    assert within_position_auroc(-position, labels, position) == pytest.approx(0.5)
    assert np.isnan(within_position_auroc([1.0, 2.0], [True, False], [0, 1]))
