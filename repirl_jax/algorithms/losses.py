"""Every loss and advantage estimator, as pure jittable functions over [B, T] arrays and masks.

Conventions (METHOD.md): `mask_bt` is 1 on response tokens only; `group_b` is the prompt index of each
row (rollouts of one prompt share it; rows need not be contiguous); reductions over tokens are masked.
Each function returns a scalar loss (to minimise) and/or arrays, plus a dict of float metrics.
Equation numbers refer to the rePIRL paper (papers/repirl_2602.07832.txt).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-8


def _masked_sum(x, m, axis=None):
    return jnp.sum(x * m, axis=axis)


def masked_mean(x, m, axis=None):
    return _masked_sum(x, m, axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


def masked_whiten(x, m):
    """(x - mean) / std over the masked entries (float32); zero outside the mask."""
    mean = masked_mean(x, m)
    var = masked_mean(jnp.square(x - mean), m)
    return (x - mean) * jax.lax.rsqrt(var + _EPS) * m


def _group_sum(x_b, group_b):
    """Sum of x over each row's group, broadcast back to rows: [B] -> [B]."""
    b = x_b.shape[0]
    return jax.ops.segment_sum(x_b, group_b, num_segments=b)[group_b]


# --- 1. trajectory scores from token rewards (METHOD.md section 1) ------------------------------------

def trajectory_scores(r_bt, mask_bt):
    """R_phi(tau) = sum_t r_t m_t and rbar_phi(tau) = R / sum_t m_t. Both [B]."""
    m = mask_bt.astype(jnp.float32)
    total = _masked_sum(r_bt.astype(jnp.float32), m, axis=1)
    return total, total / jnp.maximum(m.sum(axis=1), 1.0)


# --- 2. rePIRL reward objective (Eq. 3-5, Algorithm 1 steps 4-9) ---------------------------------------

class IRLMetrics(NamedTuple):
    loss: jax.Array
    ess: jax.Array  # 1 / sum w_hat^2 over the negatives (0 if none)
    num_pos: jax.Array
    num_neg: jax.Array
    rbar_pos: jax.Array  # mean rbar over positives
    rbar_neg: jax.Array  # mean rbar over negatives (unweighted)
    max_weight: jax.Array
    skipped: jax.Array  # 1.0 when there is neither a positive nor a negative


def importance_log_weights(R_b, logp_old_bt, mask_bt):
    """log w_j = R_phi(tau_j) - sum_t logp_old[j, t] m[j, t]  (Eq. 4, in log space, no gradient)."""
    m = mask_bt.astype(jnp.float32)
    return jax.lax.stop_gradient(R_b - _masked_sum(logp_old_bt.astype(jnp.float32), m, axis=1))


def normalized_weights(log_w_b, neg_b, group_b=None, scope: str = "batch", importance_weights: bool = True):
    """Self-normalised weights w_hat over the negatives (0 elsewhere); they sum to 1 when any negative exists.

    scope "batch": softmax over all negatives (Algorithm 1). "prompt": softmax within each prompt's
    negatives, then each prompt with negatives gets an equal share 1/G (G = number of such prompts), so the
    total is 1 as in the batch scope. importance_weights=False: uniform 1/|N| (Figure 2 ablation).
    """
    neg = neg_b.astype(jnp.float32)
    if not importance_weights:
        return neg / jnp.maximum(neg.sum(), 1.0)
    masked = jnp.where(neg > 0, log_w_b, -jnp.inf)
    if scope == "batch":
        shifted = jnp.exp(masked - jnp.max(jnp.where(neg > 0, log_w_b, -1e30)))
        return shifted / jnp.maximum(shifted.sum(), 1e-30)
    if scope != "prompt":
        raise ValueError(f"weight_scope={scope!r}: expected batch or prompt")
    b = log_w_b.shape[0]
    gmax = jax.ops.segment_max(jnp.where(neg > 0, log_w_b, -1e30), group_b, num_segments=b)[group_b]
    e = jnp.exp(masked - gmax)
    within = e / jnp.maximum(_group_sum(e, group_b), 1e-30)
    has_neg = jax.ops.segment_sum(neg, group_b, num_segments=b) > 0
    return within / jnp.maximum(has_neg.sum(), 1)


def irl_weights(R_b, logp_old_bt, mask_bt, neg_b, group_b=None, scope: str = "batch", importance_weights: bool = True,
                log_weight_norm: str = "none", weight_temperature: float = 1.0, weight_cap: float = 0.0):
    """w_hat over the negatives: Eq. 4 log-weights -> `transform_log_weights` -> `normalized_weights` ->
    `truncate_weights` (the last two of which are identities at their defaults; uniform weights skip all)."""
    lw = transform_log_weights(importance_log_weights(R_b, logp_old_bt, mask_bt), mask_bt, log_weight_norm,
                               weight_temperature)
    w = normalized_weights(lw, neg_b, group_b, scope, importance_weights)
    return truncate_weights(w, neg_b, weight_cap) if importance_weights else w


def transform_log_weights(log_w_b, mask_bt, norm: str = "none", temperature: float = 1.0):
    """Options beyond the paper for the degenerate weights of long responses (defaults = the paper's Eq. 4):
    norm "per_token": log w_j / T_j (T_j = response tokens of row j, i.e. rbar_j - mean_t logp_old[j, t]:
    a per-token geometric mean of the density ratio); then divided by `temperature` (tempered weights,
    temperature > 1 flattens them toward uniform). "none" with temperature 1 returns log w unchanged."""
    if norm not in ("none", "per_token"):
        raise ValueError(f"irl.log_weight_norm={norm!r}: expected none or per_token")
    if not temperature > 0:
        raise ValueError(f"irl.weight_temperature={temperature}: must be > 0")
    lw = log_w_b
    if norm == "per_token":
        lw = lw / jnp.maximum(mask_bt.astype(jnp.float32).sum(axis=1), 1.0)
    return lw / temperature


def truncate_weights(w_hat_b, neg_b, cap: float = 0.0):
    """Truncated self-normalised weights: min(w_hat, cap / |N|), renormalised over the negatives (one
    truncation pass; cap = 0: off, the paper). E.g. cap = 5: no negative gets more than 5x the uniform share
    before renormalising."""
    if cap <= 0:
        return w_hat_b
    neg = neg_b.astype(jnp.float32)
    limit = cap / jnp.maximum(neg.sum(), 1.0)
    w = jnp.where(neg > 0, jnp.minimum(w_hat_b, limit), 0.0)
    return w / jnp.maximum(w.sum(), 1e-30)


def repirl_reward_loss(r_bt, mask_bt, logp_old_bt, pos_b, neg_b, group_b=None, weight_scope: str = "batch",
                       importance_weights: bool = True, log_weight_norm: str = "none", weight_temperature: float = 1.0,
                       weight_cap: float = 0.0) -> IRLMetrics:
    """L_phi = sum_{j in N} w_hat_j rbar(tau_j) - mean_{i in P} rbar(tau_i)   (minimised; Algorithm 1 step 8).

    r_bt: [B, T] token rewards r_phi(s_t, a_t) of every trajectory (expert demonstrations and rollouts).
    pos_b / neg_b: [B] 0/1 membership of P (experts + correct rollouts) and N (failed rollouts).
    logp_old_bt: [B, T] sampling log-probs (used for negatives only). group_b: [B] prompt index.
    The gradient is Eq. 3 with token-mean scores: sum_N w_hat grad rbar - mean_P grad rbar.
    log_weight_norm / weight_temperature / weight_cap: `transform_log_weights`, `truncate_weights` (off by
    default: the paper's weights).
    """
    pos, neg = pos_b.astype(jnp.float32), neg_b.astype(jnp.float32)
    R, rbar = trajectory_scores(r_bt, mask_bt)
    w_hat = irl_weights(R, logp_old_bt, mask_bt, neg, group_b, weight_scope, importance_weights, log_weight_norm,
                        weight_temperature, weight_cap)
    n_pos, n_neg = pos.sum(), neg.sum()
    neg_term = jnp.sum(jnp.where(neg > 0, w_hat * rbar, 0.0))
    pos_term = jnp.sum(pos * rbar) / jnp.maximum(n_pos, 1.0)
    loss = neg_term - pos_term
    ess = jnp.where(n_neg > 0, 1.0 / jnp.maximum(jnp.sum(jnp.square(w_hat)), 1e-30), 0.0)
    return IRLMetrics(
        loss=loss, ess=ess, num_pos=n_pos, num_neg=n_neg,
        rbar_pos=jax.lax.stop_gradient(pos_term),
        rbar_neg=jax.lax.stop_gradient(jnp.sum(neg * rbar) / jnp.maximum(n_neg, 1.0)),
        max_weight=jnp.max(w_hat), skipped=((n_pos + n_neg) == 0).astype(jnp.float32))


# --- 3. advantages -------------------------------------------------------------------------------------

def last_token_mask(mask_bt):
    """1 at each row's last response token (rows without response tokens: all 0)."""
    m = mask_bt.astype(jnp.int32)
    t = m.shape[1]
    last = t - 1 - jnp.argmax(m[:, ::-1], axis=1)
    return (jnp.arange(t)[None, :] == last[:, None]).astype(jnp.float32) * (m.sum(axis=1, keepdims=True) > 0)


def rloo_stream(rewards_bt, stream_mask_bt, group_b):
    """Leave-one-out within each prompt group for one reward stream (METHOD.md section 3):
    R'[i,t] = R[i,t] * n/(n-1) - sum_j rbar_j / (n-1) on the stream's mask, rbar_j the masked mean of row j.
    A group of size 1 has no leave-one-out baseline: its rewards pass through unchanged."""
    m = stream_mask_bt.astype(jnp.float32)
    _, rbar = trajectory_scores(rewards_bt, m)
    n = _group_sum(jnp.ones_like(rbar), group_b)
    total = _group_sum(rbar, group_b)
    safe = jnp.maximum(n - 1, 1.0)
    out = rewards_bt * (n / safe)[:, None] - (total / safe)[:, None]
    return jnp.where((n > 1)[:, None], out, rewards_bt) * m


def returns_to_go(rewards_bt, mask_bt, gamma: float = 1.0):
    """G[t] = sum_{s >= t} gamma^(s-t) R[s] m[s] (reverse cumulative sum)."""
    r = rewards_bt * mask_bt

    def step(carry, x):
        carry = x + gamma * carry
        return carry, carry
    _, g = jax.lax.scan(step, jnp.zeros(r.shape[0], r.dtype), r.T, reverse=True)
    return g.T


def rloo_advantages(outcome_b, process_bt, mask_bt, group_b, c: float, outcome_weight: float = 1.0,
                    mode: str = "token", whiten: bool = True):
    """RLOO advantages [B, T] from outcome rewards o (last token) and process rewards r_phi (every token).

    mode "token": leave-one-out per stream (outcome stream on the last token, process stream c * r on all
    response tokens), summed, return-to-go (gamma 1), whitened over the batch's response tokens.
    mode "sequence": s_i = w_o o_i + c R_phi(tau_i), A_i = s_i - mean_{j != i} s_j on every response token.
    """
    m = mask_bt.astype(jnp.float32)
    o = outcome_weight * outcome_b.astype(jnp.float32)
    process = c * process_bt.astype(jnp.float32) * m
    if mode == "sequence":
        s = o + process.sum(axis=1)
        a = rloo_stream(s[:, None], jnp.ones_like(s)[:, None], group_b)[:, 0]
        return a[:, None] * m
    if mode != "token":
        raise ValueError(f"process_mode={mode!r}: expected token or sequence")
    last = last_token_mask(m)
    combined = rloo_stream(o[:, None] * last, last, group_b) + rloo_stream(process, m, group_b)
    g = returns_to_go(combined, m)
    return masked_whiten(g, m) if whiten else g * m


def group_stats(s_b, group_b):
    """Per-row (mean, std) of s over the row's group, std unbiased (ddof 1); a group of size 1 gets mean 0
    and std 1, so a normalisation (x - mean) / (std + eps) passes its values through."""
    n = _group_sum(jnp.ones_like(s_b), group_b)
    mean = _group_sum(s_b, group_b) / n
    var = _group_sum(jnp.square(s_b - mean), group_b) / jnp.maximum(n - 1, 1.0)
    return jnp.where(n > 1, mean, 0.0), jnp.where(n > 1, jnp.sqrt(var), 1.0)


def grpo_advantages(outcome_b, process_bt, mask_bt, group_b, c: float, outcome_weight: float = 1.0):
    """A_i = (s_i - mean_g s) / (std_g s + 1e-6), s_i = w_o o_i + c R_phi(tau_i); std unbiased (ddof 1);
    a group of size 1 has mean 0 and std 1 (its score passes through)."""
    m = mask_bt.astype(jnp.float32)
    s = outcome_weight * outcome_b.astype(jnp.float32) + c * (process_bt * m).sum(axis=1)
    mean, std = group_stats(s, group_b)
    return ((s - mean) / (std + 1e-6))[:, None] * m


def token_rewards(outcome_b, process_bt, mask_bt, c: float, outcome_weight: float = 1.0):
    """Per-token reward for PPO: c * r_phi on every response token plus w_o * o on the last one."""
    m = mask_bt.astype(jnp.float32)
    return (c * process_bt + outcome_weight * outcome_b[:, None] * last_token_mask(m)) * m


def gae_advantages(rewards_bt, values_bt, mask_bt, gamma: float = 1.0, lam: float = 1.0):
    """Generalised advantage estimation over response tokens; V after the last token is 0.
    Returns (advantages, returns = advantages + values), both [B, T] and zero outside the mask."""
    m = mask_bt.astype(jnp.float32)
    v = values_bt * m
    next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
    delta = (rewards_bt + gamma * next_v - v) * m

    def step(carry, x):
        d, mt = x
        carry = d + gamma * lam * carry * mt
        return carry, carry
    _, adv = jax.lax.scan(step, jnp.zeros(m.shape[0]), (delta.T, m.T), reverse=True)
    adv = adv.T * m
    return adv, (adv + v) * m


def value_loss(values_bt, old_values_bt, returns_bt, mask_bt, clip: float = 0.2, num_tokens=None):
    """0.5 * max((V - G)^2, (V_old + clip(V - V_old, -c, c) - G)^2), token-mean."""
    clipped = old_values_bt + jnp.clip(values_bt - old_values_bt, -clip, clip)
    err = jnp.maximum(jnp.square(values_bt - returns_bt), jnp.square(clipped - returns_bt))
    denom = jnp.sum(mask_bt) if num_tokens is None else num_tokens
    return 0.5 * _masked_sum(err, mask_bt) / jnp.maximum(denom, 1.0)


# --- 4. policy loss (Eq. 6 with PPO clipping) -----------------------------------------------------------

def ppo_policy_loss(logp_bt, logp_old_bt, adv_bt, mask_bt, entropy_bt=None, clip_low: float = 0.2,
                    clip_high: float = 0.2, dual_clip: float = 3.0, entropy_coef: float = 0.001,
                    logp_ref_bt=None, kl_coef: float = 0.0, num_tokens=None):
    """PPO clipped surrogate with dual clip, minus entropy bonus, plus optional k3 KL to a reference.

    ratio = exp(clip(logp - logp_old, -20, 20)); per token pg = max(-A r, -A clip(r, 1-cl, 1+ch)), and for
    A < 0 additionally min(pg, -A * dual_clip). Token-mean over `num_tokens` (the global batch's response
    tokens; default: this batch's). Returns (loss, metrics).
    """
    m = mask_bt.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(m) if num_tokens is None else num_tokens, 1.0)
    log_ratio = jnp.clip(logp_bt - logp_old_bt, -20.0, 20.0)
    ratio = jnp.exp(log_ratio)
    pg1 = -adv_bt * ratio
    pg2 = -adv_bt * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = jnp.maximum(pg1, pg2)
    pg = jnp.where(adv_bt < 0, jnp.minimum(pg, -adv_bt * dual_clip), pg)
    loss = jnp.sum(pg * m) / denom
    metrics = {
        "pg_loss": loss,
        "clip_frac": jnp.sum((pg2 > pg1).astype(jnp.float32) * m) / denom,
        "approx_kl": jnp.sum(0.5 * jnp.square(log_ratio) * m) / denom,
    }
    if entropy_bt is not None:
        ent = jnp.sum(entropy_bt * m) / denom
        loss = loss - entropy_coef * ent
        metrics["entropy"] = ent
    if logp_ref_bt is not None:
        d = logp_ref_bt - logp_bt
        k3 = jnp.sum((jnp.exp(d) - d - 1.0) * m) / denom
        loss = loss + kl_coef * k3
        metrics["kl_ref"] = k3
    return loss, metrics


# --- 5. baselines --------------------------------------------------------------------------------------

def bc_loss(logp_bt, mask_bt, num_tokens=None):
    """Next-token cross-entropy on expert responses: -sum logp m / sum m."""
    denom = jnp.maximum(jnp.sum(mask_bt) if num_tokens is None else num_tokens, 1.0)
    return -_masked_sum(logp_bt, mask_bt) / denom


def prime_implicit_prm_loss(logp_phi_bt, logp_ref_bt, mask_bt, outcome_b, beta: float = 0.05, keep_b=None,
                            num_rows=None):
    """PRIME: BCE(sigmoid(beta * sum_t (log pi_phi - log pi_ref) m), o), mean over the kept rollouts:

        L = sum_b keep_b * BCE_b / num_rows,   acc = sum_b keep_b * [(z_b > 0) = (o_b > 0.5)] / num_rows

    keep_b: [B] 1 for rows of prompts the accuracy filter kept (default: all rows), so filtered rows add
    neither loss (log 2 at z = 0) nor count, as in PRIME's own code, which drops them; num_rows: the kept-row
    count of the whole mini-batch (default: this batch's), so micro-batch losses add up.
    Token rewards of the implicit PRM are beta * (log pi_phi - log pi_ref)."""
    z = beta * _masked_sum(logp_phi_bt - logp_ref_bt, mask_bt.astype(jnp.float32), axis=1)
    o = outcome_b.astype(jnp.float32)
    keep = jnp.ones_like(o) if keep_b is None else keep_b.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(keep) if num_rows is None else num_rows, 1.0)
    bce = -(o * jax.nn.log_sigmoid(z) + (1.0 - o) * jax.nn.log_sigmoid(-z))
    acc = ((z > 0) == (o > 0.5)).astype(jnp.float32)
    return jnp.sum(keep * bce) / denom, {"prm_acc": jnp.sum(keep * acc) / denom}


def kto_loss(logp_bt, logp_ref_bt, mask_bt, desirable_b, undesirable_b, beta: float = 0.1,
             lambda_d: float = 1.0, lambda_u: float = 1.0):
    """KTO (Ethayarajh et al., 2024) with sequence log-ratios r = sum_t (log pi - log pi_ref) m and the
    reference point z0 = max(0, mean r over the batch), without gradient (a batch estimate of the KL term).
    loss = mean over D of lambda_d (1 - sigmoid(beta (r - z0))) and over U of lambda_u (1 - sigmoid(beta (z0 - r)))."""
    m = mask_bt.astype(jnp.float32)
    r = _masked_sum(logp_bt - logp_ref_bt, m, axis=1)
    d, u = desirable_b.astype(jnp.float32), undesirable_b.astype(jnp.float32)
    used = jnp.maximum(d + u, 0.0)
    z0 = jax.lax.stop_gradient(jnp.maximum(jnp.sum(r * used) / jnp.maximum(used.sum(), 1.0), 0.0))
    per = d * lambda_d * (1 - jax.nn.sigmoid(beta * (r - z0))) + u * lambda_u * (1 - jax.nn.sigmoid(beta * (z0 - r)))
    return jnp.sum(per) / jnp.maximum(used.sum(), 1.0), {"kto_z0": z0}


# --- 6. the other process-reward methods (METHOD.md section 4) ------------------------------------------

def step_end_mask(tokens_bt, mask_bt, delimiter_id: int = -1, every: int = 0):
    """1 at the last token of each reasoning step, [B, T] float32: a response token equal to `delimiter_id`
    (every > 0: instead every `every`-th response token, t + 1 = every, 2 every, ...), and always each row's
    last response token (so the last step ends there even without a delimiter). 0 off the mask."""
    m = mask_bt > 0
    if every > 0:
        hit = ((jnp.arange(m.shape[1]) + 1) % every == 0)[None, :]
    else:
        hit = tokens_bt == delimiter_id
    return ((hit & m) | (last_token_mask(mask_bt) > 0)).astype(jnp.float32)


def fill_back(values_bt, ends_bt, mask_bt):
    """Each response token takes the value at the first step end at or after it: out[t] = v[e(t)],
    e(t) = min{s >= t : ends[s] = 1} (0 where there is none, and off the mask). [B, T]."""
    def step(carry, x):
        v, e = x
        carry = jnp.where(e > 0, v, carry)
        return carry, carry
    _, out = jax.lax.scan(step, jnp.zeros(values_bt.shape[0], jnp.float32),
                          (values_bt.astype(jnp.float32).T, ends_bt.T), reverse=True)
    return out.T * mask_bt


def airl_discriminator_loss(logits_bt, mask_bt, label_b, smoothing: float = 0.1, num_tokens=None):
    """Token-wise binary cross-entropy of the AIRL discriminator D = sigmoid(z) (dense-reward AIRL paper;
    rePIRL Proposition 3): expert tokens label 1, policy (and perturbed-expert) tokens label 0, smoothed as
    y = label (1 - smoothing) + smoothing / 2 (two-class label smoothing: 0.95 / 0.05 at 0.1).

        L = sum_{b,t} m[b,t] * -(y_b log sigmoid(z[b,t]) + (1 - y_b) log sigmoid(-z[b,t])) / num_tokens

    logits_bt: [B, T] discriminator logits z (the scalar head's token output); label_b: [B] 0/1;
    num_tokens: the token count of the whole mini-batch (default: this batch's), so micro-batch losses add up.
    Returns (loss, {"disc_acc": fraction of tokens on the right side of 0, same denominator})."""
    m = mask_bt.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(m) if num_tokens is None else num_tokens, 1.0)
    lab = label_b.astype(jnp.float32)[:, None]
    y = lab * (1.0 - smoothing) + 0.5 * smoothing
    z = logits_bt.astype(jnp.float32)
    bce = -(y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
    acc = ((z > 0) == (lab > 0.5)).astype(jnp.float32)
    return jnp.sum(bce * m) / denom, {"disc_acc": jnp.sum(acc * m) / denom}


def airl_dense_advantages(outcome_b, logits_bt, mask_bt, group_b, c: float = 1.0, outcome_weight: float = 0.0,
                          clip_min: float = -10.0, clip_max: float = 10.0, gamma: float = 0.9, eps: float = 1e-4):
    """Dense-reward AIRL policy advantages (Fanconi et al., 2510.01857, policy update: GRPO with dense
    rewards, normalised per group then a discounted suffix sum). [B, T]:

        r[i,t]  = c * clip(z[i,t], clip_min, clip_max) m[i,t] + w_o o_i [t = last response token of i]
        rbar_i  = sum_t r[i,t] m[i,t] / sum_t m[i,t]                   (a trajectory's mean token reward)
        rt[i,t] = (r[i,t] - mean_{j in g(i)} rbar_j) / (std_{j in g(i)} rbar_j + eps)   (std ddof 1)
        A[i,t]  = sum_{s >= t} gamma^(s - t) rt[i,s] m[i,s]

    z: the discriminator logits (log D - log(1 - D), the AIRL reward); o: outcome rewards [B]; group_b: [B].
    A group of size 1 has mean 0 and std 1 (its rewards pass through). The local copy of the paper holds
    only its abstract, so the equation number could not be checked; the formula follows its published
    description (group-normalised token rewards, discounted suffix sum, gamma 0.9)."""
    m = mask_bt.astype(jnp.float32)
    r = (c * jnp.clip(logits_bt.astype(jnp.float32), clip_min, clip_max)
         + outcome_weight * outcome_b.astype(jnp.float32)[:, None] * last_token_mask(m)) * m
    _, rbar = trajectory_scores(r, m)
    mean, std = group_stats(rbar, group_b)
    return returns_to_go((r - mean[:, None]) / (std[:, None] + eps) * m, m, gamma)


def prl_advantages(outcome_b, logp_old_bt, logp_ref_bt, mask_bt, ends_bt, group_b, eta: float = 200.0,
                   outcome_weight: float = 1.0):
    """PRL (Yao et al., 2601.10201) process rewards used directly as the advantage, [B, T]:

        A_out,i = (w_o o_i - mean_g(w_o o)) / (std_g(w_o o) + 1e-6)     (group-relative, as grpo_advantages)
        p[i,t]  = A_out,i - (1 / eta) sum_{j >= t} (logp_old - logp_ref)[i,j] m[i,j]   at step ends t
        A[i,t]  = p[i, e(t)],  e(t) the first step end at or after t                  (filled back)

    METHOD.md section 4 (the local copy of the paper holds only its abstract). logp_old: the sampling
    log-probs; logp_ref: the frozen reference's; ends_bt: `step_end_mask`."""
    m = mask_bt.astype(jnp.float32)
    s = outcome_weight * outcome_b.astype(jnp.float32)
    mean, std = group_stats(s, group_b)
    a_out = (s - mean) / (std + 1e-6)
    kl_to_go = returns_to_go((logp_old_bt - logp_ref_bt).astype(jnp.float32), m, 1.0)
    return fill_back(a_out[:, None] - kl_to_go / eta, ends_bt, m)


def step_bce_loss(logits_bt, ends_bt, labels_bt, num_steps=None):
    """Math-Shepherd PRM loss: binary cross-entropy of sigmoid(z) at each step-end token against that step's
    label (hard 0/1 or soft fraction), averaged over steps:

        L = sum_{b,t} e[b,t] * -(y[b,t] log sigmoid(z[b,t]) + (1 - y[b,t]) log sigmoid(-z[b,t])) / num_steps

    logits_bt / ends_bt / labels_bt: [B, T] (labels are read at the ends only); num_steps: the step count of
    the whole mini-batch (default: this batch's). Returns (loss, {"step_acc": steps with (z > 0) == (y > 0.5)})."""
    e = ends_bt.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(e) if num_steps is None else num_steps, 1.0)
    z, y = logits_bt.astype(jnp.float32), labels_bt.astype(jnp.float32)
    bce = -(y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
    acc = ((z > 0) == (y > 0.5)).astype(jnp.float32)
    return jnp.sum(bce * e) / denom, {"step_acc": jnp.sum(acc * e) / denom}


# --- host side (numpy): labels and step scores --------------------------------------------------------

def shepherd_labels(correct_pk, mode: str = "soft"):
    """Math-Shepherd step labels from k completions per step prefix: correct_pk [S, k] 0/1 -> [S] float32,
    "soft" = fraction of correct completions, "hard" = 1 if any completion is correct."""
    c = np.asarray(correct_pk, np.float32)
    if mode == "soft":
        return c.mean(axis=1) if c.shape[1] else np.zeros(c.shape[0], np.float32)
    if mode == "hard":
        return (c.max(axis=1, initial=0.0) > 0).astype(np.float32)
    raise ValueError(f"label mode {mode!r}: expected soft or hard")


def step_scores(rewards_t, ends_t, reduce: str = "mean"):
    """Per-step scores of one trace: steps are the token spans closed by each step end (`step_end_mask`
    of the row, [T]); reduce "mean" = mean token reward over the step's tokens (dense PRMs), "last" = the
    value at the step-end token (Math-Shepherd). Tokens after the last end are ignored. [S] float64."""
    r, e = np.asarray(rewards_t, np.float64), np.asarray(ends_t) > 0
    out, start = [], 0
    for t in np.flatnonzero(e):
        out.append(r[start:t + 1].mean() if reduce == "mean" else r[t])
        start = t + 1
    if reduce not in ("mean", "last"):
        raise ValueError(f"reduce={reduce!r}: expected mean or last")
    return np.asarray(out, np.float64)


def min_step_score(rewards_t, ends_t, reduce: str = "mean") -> float:
    """A solution's score under a step-level PRM: its minimum step score (Math-Shepherd); -inf if no step."""
    s = step_scores(rewards_t, ends_t, reduce)
    return float(s.min()) if s.size else float("-inf")
