"""Per-token statistics of responses, computed in chunks so [batch, length, vocab] never exists at once.

Sequences are laid out as [left-padded prompt (P tokens) | response (R tokens, right-padded)], so response
token t sits at index P + t; it is predicted from the hidden state at P + t - 1 and the PRM reads it at
P + t. Log-probs and entropies use float32 whatever the compute dtype. The chunk loop is a `lax.map`; with
`remat` (the default, and whenever the model itself is rematerialised) the backward pass recomputes each
chunk's logits instead of storing them, one more [tokens, embed] x [embed, vocab] product per chunk. A model
with `remat="none"` stores every activation, and then the chunks' logits too (as a PyTorch step does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from repirl_jax.models import heads, qwen
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime.sharding import ActivationSharding


def positions_and_mask(prompt_mask_bp, response_mask_br):
    mask = jnp.concatenate([prompt_mask_bp, response_mask_br], axis=1).astype(jnp.int32)
    return qwen.positions_from_mask(mask), mask


_UNROLL = 16  # most chunks unrolled without remat (more would only lengthen compilation)


def chunked_logprobs(hidden_bre, head_ve, targets_br, chunk: int, with_entropy: bool = True, remat: bool = True):
    """log softmax(h @ head^T)[target] and the full-vocabulary entropy, [B, R] each, `chunk` positions at a time.

    head_ve: the LM head as [vocab, embed] rows (a tied head is the embedding table itself: the product
    reads it in place, where an [embed, vocab] transpose is a 98 MB copy per step at bench_train.py
    --size=S, and its gradient lands in the table's layout). remat: a sequential `lax.map` whose chunks
    recompute their logits in the backward pass (memory [B, chunk, V]); without it each chunk keeps its logits
    ([B, R, V] float32 in all), and up to `_UNROLL` chunks are unrolled (a `lax.map` zero-fills a stacked
    buffer for them: 0.4 s a step at bench_train.py --size=S)."""
    b, r, e = hidden_bre.shape
    chunk = max(1, min(chunk, r))
    pad = (-r) % chunk
    h = jnp.pad(hidden_bre, ((0, 0), (0, pad), (0, 0)))
    t = jnp.pad(targets_br, ((0, 0), (0, pad)))
    n = (r + pad) // chunk
    h = h.reshape(b, n, chunk, e).transpose(1, 0, 2, 3)
    t = t.reshape(b, n, chunk).transpose(1, 0, 2)
    head = head_ve.astype(hidden_bre.dtype)

    def one(args):
        hc, tc = args
        logits = jnp.einsum("ne,ve->nv", hc.reshape(-1, e), head, preferred_element_type=jnp.float32)
        logits = logits.reshape(b, chunk, -1)  # [B, chunk, V]; flat [B * chunk, E] rows: see qwen.dense
        lse = jax.nn.logsumexp(logits, axis=-1)
        lp = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0] - lse
        if not with_entropy:
            return lp, jnp.zeros_like(lp)
        ent = lse - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
        return lp, ent

    if remat or n > _UNROLL:
        lp, ent = jax.lax.map(jax.checkpoint(one) if remat else one, (h, t))
    else:
        lp, ent = (jnp.stack(x) for x in zip(*[one((h[i], t[i])) for i in range(n)]))
    lp = lp.transpose(1, 0, 2).reshape(b, n * chunk)[:, :r]
    ent = ent.transpose(1, 0, 2).reshape(b, n * chunk)[:, :r]
    return lp, ent


def sequence_hidden(params, cfg: QwenConfig, prompt_bp, prompt_mask_bp, response_br, response_mask_br,
                    act: ActivationSharding | None = None):
    """Final hidden states over [prompt | response], [B, P + R, E]."""
    tokens = jnp.concatenate([prompt_bp, response_br], axis=1)
    positions, mask = positions_and_mask(prompt_mask_bp, response_mask_br)
    return qwen.forward(params, cfg, tokens, positions, mask, act=act)[0]


def policy_logprobs(params, cfg: QwenConfig, hidden_ble, response_br, chunk: int = 256, with_entropy: bool = True):
    """(log pi(a_t | s_t), entropy of pi(. | s_t)) for every response token from `sequence_hidden`, [B, R].

    The chunks' logits are rematerialised in the backward pass unless the model is not (`cfg.remat`)."""
    r = response_br.shape[1]
    p = hidden_ble.shape[1] - r
    return chunked_logprobs(hidden_ble[:, p - 1:p + r - 1], qwen.lm_head_rows(params, cfg), response_br, chunk,
                            with_entropy, remat=cfg.remat != "none")


def response_logprobs(params, cfg: QwenConfig, prompt_bp, prompt_mask_bp, response_br, response_mask_br,
                      chunk: int = 256, with_entropy: bool = True, act: ActivationSharding | None = None):
    """Forward pass + `policy_logprobs`."""
    hidden = sequence_hidden(params, cfg, prompt_bp, prompt_mask_bp, response_br, response_mask_br, act)
    return policy_logprobs(params, cfg, hidden, response_br, chunk, with_entropy)


def prm_token_rewards(prm_params, cfg: QwenConfig, prompt_bp, prompt_mask_bp, response_br, response_mask_br,
                      act: ActivationSharding | None = None):
    """Scalar-head PRM rewards r_phi(s_t, a_t) (hidden at P + t, after reading a_t), [B, R] float32, 0 off-mask."""
    hidden = sequence_hidden(prm_params["trunk"], cfg, prompt_bp, prompt_mask_bp, response_br, response_mask_br, act)
    p = prompt_bp.shape[1]
    return heads.apply_scalar_head(prm_params["head"], hidden[:, p:]) * response_mask_br


def state_values(value_head, hidden_ble, response_mask_br):
    """PPO values V(s_t), read before a_t (hidden at P + t - 1), [B, R]."""
    r = response_mask_br.shape[1]
    p = hidden_ble.shape[1] - r
    return heads.apply_scalar_head(value_head, hidden_ble[:, p - 1:p + r - 1]) * response_mask_br
