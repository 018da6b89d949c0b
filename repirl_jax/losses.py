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


def repirl_reward_loss(r_bt, mask_bt, logp_old_bt, pos_b, neg_b, group_b=None, weight_scope: str = "batch",
                       importance_weights: bool = True) -> IRLMetrics:
    """L_phi = sum_{j in N} w_hat_j rbar(tau_j) - mean_{i in P} rbar(tau_i)   (minimised; Algorithm 1 step 8).

    r_bt: [B, T] token rewards r_phi(s_t, a_t) of every trajectory (expert demonstrations and rollouts).
    pos_b / neg_b: [B] 0/1 membership of P (experts + correct rollouts) and N (failed rollouts).
    logp_old_bt: [B, T] sampling log-probs (used for negatives only). group_b: [B] prompt index.
    The gradient is Eq. 3 with token-mean scores: sum_N w_hat grad rbar - mean_P grad rbar.
    """
    pos, neg = pos_b.astype(jnp.float32), neg_b.astype(jnp.float32)
    R, rbar = trajectory_scores(r_bt, mask_bt)
    w_hat = normalized_weights(importance_log_weights(R, logp_old_bt, mask_bt), neg, group_b, weight_scope,
                               importance_weights)
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


def grpo_advantages(outcome_b, process_bt, mask_bt, group_b, c: float, outcome_weight: float = 1.0):
    """A_i = (s_i - mean_g s) / (std_g s + 1e-6), s_i = w_o o_i + c R_phi(tau_i); std unbiased (ddof 1);
    a group of size 1 has mean 0 and std 1 (its score passes through)."""
    m = mask_bt.astype(jnp.float32)
    s = outcome_weight * outcome_b.astype(jnp.float32) + c * (process_bt * m).sum(axis=1)
    n = _group_sum(jnp.ones_like(s), group_b)
    mean = _group_sum(s, group_b) / n
    var = _group_sum(jnp.square(s - mean), group_b) / jnp.maximum(n - 1, 1.0)
    mean = jnp.where(n > 1, mean, 0.0)
    std = jnp.where(n > 1, jnp.sqrt(var), 1.0)
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


def prime_implicit_prm_loss(logp_phi_bt, logp_ref_bt, mask_bt, outcome_b, beta: float = 0.05):
    """PRIME: BCE(sigmoid(beta * sum_t (log pi_phi - log pi_ref) m), o), mean over rollouts.
    Token rewards of the implicit PRM are beta * (log pi_phi - log pi_ref)."""
    z = beta * _masked_sum(logp_phi_bt - logp_ref_bt, mask_bt.astype(jnp.float32), axis=1)
    o = outcome_b.astype(jnp.float32)
    bce = -(o * jax.nn.log_sigmoid(z) + (1.0 - o) * jax.nn.log_sigmoid(-z))
    return jnp.mean(bce), {"prm_acc": jnp.mean(((z > 0) == (o > 0.5)).astype(jnp.float32))}


def implicit_token_rewards(logp_phi_bt, logp_ref_bt, mask_bt, beta: float = 0.05):
    return beta * (logp_phi_bt - logp_ref_bt) * mask_bt


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
