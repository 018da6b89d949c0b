"""One-token decode step in weight-major layout: the CPU sampler's inner step.

    dw = decode_weights(params, cfg)                     # once per sampler call (inside its jit)
    logits_bv, cache = decode_step(dw, cfg, token_b, position_b, mask_b, cache)

Same arithmetic as `qwen.forward` on one token per row followed by `qwen.lm_logits`, laid out for a
matrix-vector-like product on the CPU. With B rows (16-64) against matrices of 10^6-10^8 entries, XLA's
CPU dot of activations [B, in] by a weight [in, out] repacks the whole weight on every call; the product
weight [out, in] @ activations [in, B] streams the weight once. So here every matrix is stored [out, in]
(q, k and v stacked into one, gate and up into one: fewer, larger products), the activations travel
feature-major [E, B] through the layer stack, and only small [B, ...] arrays are transposed (at the
attention, which reads the usual cache layout). `tools/bench_sampler.py --size=S --profile` shows the
effect per piece. A tied LM head is the embedding table itself ([V, E]: no copy).

The copies cost one pass over the weights per sampler call and the weights' memory once more while it
runs; `sampling` uses this path on the CPU backend only (`SamplingConfig.decode_impl`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from repirl_jax.models import qwen
from repirl_jax.models.config import QwenConfig


def decode_weights(params: qwen.Params, cfg: QwenConfig) -> dict[str, Any]:
    """The weights as `decode_step` reads them, in the compute dtype: per layer qkv [(H + 2K) * D, E] (+ bias
    [(H + 2K) * D, 1]), o [E, H * D], gate_up [2M, E], down [E, M], norm scales [E, 1] (float32); embed [V, E],
    head [V, E]."""
    dt = jnp.dtype(cfg.dtype)
    e, h, k, d = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    col = lambda s: s.astype(jnp.float32)[:, None]  # noqa: E731 - a scale broadcast over the B columns
    layers = []
    for i in range(cfg.num_hidden_layers):
        lp = params[f"layer_{i}"]
        a, m = lp["attn"], lp["mlp"]
        w = {"qkv": jnp.concatenate([a["q_kernel"].reshape(e, h * d), a["k_kernel"].reshape(e, k * d),
                                     a["v_kernel"].reshape(e, k * d)], axis=1).T.astype(dt),
             "o": a["o_kernel"].reshape(h * d, e).T.astype(dt),
             "gate_up": jnp.concatenate([m["gate_kernel"], m["up_kernel"]], axis=1).T.astype(dt),
             "down": m["down_kernel"].T.astype(dt),
             "input_norm": col(lp["input_norm"]["scale"]), "post_attn_norm": col(lp["post_attn_norm"]["scale"])}
        if cfg.qkv_bias:
            w["qkv_bias"] = jnp.concatenate([a["q_bias"].reshape(-1), a["k_bias"].reshape(-1),
                                             a["v_bias"].reshape(-1)]).astype(dt)[:, None]
        if cfg.o_bias:
            w["o_bias"] = a["o_bias"].astype(dt)[:, None]
        if cfg.qk_norm:
            w["q_norm"], w["k_norm"] = col(a["q_norm"]["scale"]), col(a["k_norm"]["scale"])
        layers.append(w)
    head = params["embed"] if cfg.tie_word_embeddings else params["lm_head"].T
    return {"layers": layers, "embed": params["embed"], "head": head.astype(dt),
            "final_norm": col(params["final_norm"]["scale"])}


def _norm(x_eb, scale_e1, eps: float):
    """RMSNorm over the feature axis 0 of [E, B] (or [.., D, B] with axis -2), float32 inside."""
    x = x_eb.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-2, keepdims=True) + eps)
    return (scale_e1 * x).astype(x_eb.dtype)


def _rotary(x_ndb, position_b, inv_freq):
    """Rotate-half RoPE on [N, D, B] (D the head dim), as `qwen.rotary`; inv_freq [D/2] from `qwen.rope_inv_freq`."""
    d = x_ndb.shape[1]
    angle = inv_freq[:, None] * position_b.astype(jnp.float32)[None, :]  # [D/2, B]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x = x_ndb.astype(jnp.float32)
    x1, x2 = x[:, : d // 2], x[:, d // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=1).astype(x_ndb.dtype)


def _dot(w, x, out_dtype=None):
    """w [out, in] @ x [in, B]. The barrier pins the product's row-major layout: without it XLA folds a later
    transpose of the small result into the dot, which turns it back into the slow [B, in] @ [in, out] form."""
    return jax.lax.optimization_barrier(jnp.matmul(w, x.astype(w.dtype), preferred_element_type=out_dtype or w.dtype))


def _attend(q_kgdb, k_kdb, v_kdb, ck, cv, index, valid_bs, dt):
    """One query per row over the cache, after writing the new key/value at `index`: the arithmetic of
    `qwen.cached_attention` with T = 1, but scores laid out [B, K, G, S] (slots minor), so the max and sum of
    the softmax reduce the minor axis (~10% faster per decode step on the CPU at shape S than [B, K, S, G]).
    Returns out [B, K, G, D] and the cache (k [B, K, D, S], v [B, K, S, D])."""
    ck = qwen._write_rows(ck, k_kdb.transpose(2, 0, 1)[..., None], index, axis=3)
    cv = qwen._write_rows(cv, v_kdb.transpose(2, 0, 1)[:, :, None, :], index, axis=2)
    q = q_kgdb.transpose(3, 0, 1, 2)  # [B, K, G, D]
    scores = jnp.einsum("bkgd,bkds->bkgs", q, ck.astype(dt), preferred_element_type=jnp.float32)
    scores = jnp.where(valid_bs[:, None, None, :], scores, qwen._MASK_VALUE)
    weights = jnp.exp(scores - jnp.max(scores, axis=3, keepdims=True))
    out = jnp.einsum("bkgs,bksd->bkgd", weights.astype(dt), cv.astype(dt), preferred_element_type=jnp.float32)
    return (out / jnp.sum(weights, axis=3)[..., None]).astype(dt), ck, cv


def head_logits(dw: dict[str, Any], hidden_be) -> jax.Array:
    """LM-head logits [B, V] (float32) of final hidden states [B, E] (e.g. the prefill's last position)."""
    return _dot(dw["head"], hidden_be.T, jnp.float32).T


def decode_step(dw: dict[str, Any], cfg: QwenConfig, token_b, position_b, mask_b, cache: qwen.KVCache):
    """Logits [B, V] (float32) of one new token per row and the cache with its key/value written at
    `cache.index` (a scalar slot, or one per row). mask_b [B]: 1 where the token is real (written valid)."""
    dt = jnp.dtype(cfg.dtype)
    h, k, d, g = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.num_groups
    b = token_b.shape[0]
    eps = cfg.rms_norm_eps
    inv_freq = qwen.rope_inv_freq(cfg)
    valid = qwen._write_rows(cache.valid, mask_b.astype(bool)[:, None], cache.index, axis=1)  # [B, S]
    x = jnp.take(dw["embed"], token_b, axis=0).astype(dt).T  # [E, B]
    new_k, new_v = [], []
    for i, w in enumerate(dw["layers"]):
        qkv = _dot(w["qkv"], _norm(x, w["input_norm"], eps))  # [(H + 2K) D, B]
        if cfg.qkv_bias:
            qkv = qkv + w["qkv_bias"]
        q = qkv[: h * d].reshape(h, d, b)
        kk = qkv[h * d:(h + k) * d].reshape(k, d, b)
        vv = qkv[(h + k) * d:].reshape(k, d, b)
        if cfg.qk_norm:
            q, kk = _norm(q, w["q_norm"], eps), _norm(kk, w["k_norm"], eps)
        q = _rotary(q, position_b, inv_freq) * jnp.asarray(d ** -0.5, dt)
        kk = _rotary(kk, position_b, inv_freq)
        out, ck, cv = _attend(q.reshape(k, g, d, b), kk, vv, cache.k[i], cache.v[i], cache.index, valid, dt)
        new_k.append(ck)
        new_v.append(cv)
        y = _dot(w["o"], out.reshape(b, h * d).T)  # [E, B]
        if cfg.o_bias:
            y = y + w["o_bias"]
        x = x + y
        gu = _dot(w["gate_up"], _norm(x, w["post_attn_norm"], eps))  # [2M, B]
        m = gu.shape[0] // 2
        x = x + _dot(w["down"], jax.nn.silu(gu[:m]) * gu[m:])
    x = _norm(x, dw["final_norm"], eps)
    logits = _dot(dw["head"], x, jnp.float32).T  # [B, V]
    return logits, qwen.KVCache(tuple(new_k), tuple(new_v), valid, cache.index + 1)
