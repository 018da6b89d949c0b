"""Causal self-attention without a KV cache (training, PRM passes, log-probs): one function, three kernels.

    out_btkgd = causal_attention(q_btkgd, k_btkd, v_btkd, real_bt, impl=..., block=..., dt=..., remat=...)

q is already scaled by head_dim ** -0.5 (and RoPE-rotated); k, v have the K key/value heads of grouped-query
attention, q has K x G heads. `real_bt` is True where a slot holds a real token. Query slot i sees key slot j
iff j <= i and (slot j is real or j == i): a padding slot also sees itself, so no query row is fully masked.

Kernels (`QwenConfig.attn_impl`):
  "blocked": causal query blocks of `block` positions through XLA. Block [s, e) scores only keys [0, e), so
      about half of the T x T work is skipped for many blocks; the mask is built per block from iotas and
      `real_bt` (nothing [B, T, T] is materialised). With `remat` the blocks are a sequential,
      rematerialised `lax.map` over all keys: a backward pass holds one block's scores at a time.
  "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")` (cuDNN flash attention: no scores in
      memory, the causal half skipped by the kernel). cuDNN masks by per-row lengths, i.e. right padding;
      rows here are [left padding | real tokens | right padding], so each row is first rotated left by its
      count of leading padding (its real tokens then start at slot 0), attended with `is_causal=True` and
      `query_seq_lengths = key_value_seq_lengths = real tokens`, and rotated back. This needs each row's real
      tokens to be one contiguous run (every caller's layout: left-padded prompt + right-padded response);
      outputs at padding slots differ from "blocked" (they are never read). bfloat16/float16 only; needs a
      GPU with cuDNN to lower.
  "auto" (default): "cudnn" on a GPU backend when the dtype and head size allow it (and cuDNN accepts them
      while tracing), else "blocked". On a CPU host lowering for a GPU (tools/export_check.py) that is
      "blocked": the choice follows jax.default_backend().
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
IMPLS = ("auto", "blocked", "cudnn")


def cudnn_supported(dtype, head_dim: int) -> bool:
    """Whether cuDNN flash attention takes these operands: fp16/bf16, head_dim a multiple of 8 and <= 128
    (<= 256 on Hopper and later; 128 is the conservative bound here)."""
    return jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) and head_dim % 8 == 0 \
        and head_dim <= 128


def resolve_impl(impl: str, dtype, head_dim: int, backend: str | None = None) -> str:
    """The kernel "auto" stands for on `backend` (default: jax.default_backend())."""
    if impl not in IMPLS:
        raise ValueError(f"attn_impl={impl!r}: expected one of {IMPLS}")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    return "cudnn" if backend == "gpu" and cudnn_supported(dtype, head_dim) else "blocked"


def causal_attention(q_btkgd, k_btkd, v_btkd, real_bt, *, impl: str = "auto", block: int = 128, dt=jnp.float32,
                     remat: bool = False):
    """softmax(q k^T masked causally and by `real_bt`) v, [B, T, K, G, D] in dtype `dt`."""
    chosen = resolve_impl(impl, dt, q_btkgd.shape[-1])
    if chosen == "cudnn":
        try:
            return rotated_attention(q_btkgd, k_btkd, v_btkd, real_bt, dt)
        except (NotImplementedError, RuntimeError, ValueError):
            # cuDNN refuses these operands or this GPU/cuDNN build at trace time (e.g. jax-ml/jax#32430 on
            # CUDA 13): "auto" falls back to the XLA kernel; an explicit "cudnn" re-raises.
            if impl != "auto":
                raise
    return blocked_causal_attention(q_btkgd, k_btkd, v_btkd, real_bt, block, dt, remat)


def _visible(q_start, tq: int, real_bk):
    """[B, 1, 1, tq, tk] bool: query slot q_start + i sees key slot j (j <= i + q_start and (j real or j equals
    it)); `real_bk` = real_bt[:, :tk] (a static slice: no gather)."""
    tk = real_bk.shape[1]
    i = q_start + jax.lax.broadcasted_iota(jnp.int32, (tq, tk), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (tq, tk), 1)
    vis = (j <= i)[None] & (real_bk[:, None, :] | (i == j)[None])  # [B, tq, tk]
    return vis[:, None, None]


def blocked_causal_attention(q_btkgd, k_btkd, v_btkd, real_bt, block: int, dt, remat: bool = False):
    """The "blocked" kernel (see the module docstring). Operands are laid out [B, K, (G,) T, D] so every score
    and output product is a plain batched matmul (no transposes of T x T arrays forward or backward).

    With `remat`, T is padded to a multiple of `block` and the blocks run as a sequential rematerialised
    `lax.map` over all T keys: independent unrolled blocks would let the compiler keep several blocks'
    scores alive at once (tools/memory_plan.py: Qwen3-4B's policy step 45.6 GiB per device unrolled, 32.1
    GiB sequential)."""
    t = q_btkgd.shape[1]
    real_bt = jnp.asarray(real_bt, bool)
    q = q_btkgd.transpose(0, 2, 3, 1, 4)  # [B, K, G, T, D]
    k = k_btkd.transpose(0, 2, 1, 3)  # [B, K, T, D]
    v = v_btkd.transpose(0, 2, 1, 3).astype(dt)
    block = t if block <= 0 else min(block, t)

    def one_block(qb, kb, vb, vis):
        s = jnp.einsum("bkgtd,bksd->bkgts", qb, kb, preferred_element_type=jnp.float32)
        s = jnp.where(vis, s, MASK_VALUE)
        return jnp.einsum("bkgts,bksd->bkgtd", jax.nn.softmax(s, axis=-1).astype(dt), vb)

    if remat and block < t:
        nb = -(-t // block)
        pad = nb * block - t
        qb = jnp.pad(q, ((0, 0),) * 3 + ((0, pad), (0, 0)))
        qb = jnp.moveaxis(qb.reshape(q.shape[:3] + (nb, block, q.shape[-1])), 3, 0)  # [nb, B, K, G, block, D]
        def body(xs):
            qblk, start = xs
            return one_block(qblk, k, v, _visible(start, block, real_bt))

        out = jax.lax.map(jax.checkpoint(body), (qb, jnp.arange(nb) * block))
        out = jnp.moveaxis(out, 0, 3).reshape(q.shape[:3] + (nb * block, q.shape[-1]))[:, :, :, :t]
        return out.transpose(0, 3, 1, 2, 4)  # [B, T, K, G, D]
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        vis = _visible(start, end - start, real_bt[:, :end])
        outs.append(one_block(q[:, :, :, start:end], k[:, :, :end], v[:, :, :end], vis))
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)
    return out.transpose(0, 3, 1, 2, 4)  # [B, T, K, G, D]


def _rotate_rows(x_bt, shift_b):
    """Row b of x rotated left by shift_b[b] slots along axis 1 (x[b, (t + shift) mod T])."""
    t = x_bt.shape[1]
    idx = (jnp.arange(t)[None, :] + shift_b[:, None]) % t  # [B, T]
    idx = idx.reshape(idx.shape + (1,) * (x_bt.ndim - 2))
    return jnp.take_along_axis(x_bt, idx, axis=1)


def rotated_attention(q_btkgd, k_btkd, v_btkd, real_bt, dt, implementation: str = "cudnn"):
    """The "cudnn" kernel (see the module docstring): rotate each row to right padding, fused causal
    attention with per-row lengths, rotate back. implementation="xla" runs the same arithmetic through
    XLA on any backend (it materialises T x T scores: for tests, not for production)."""
    b, t, kh, g, d = q_btkgd.shape
    real = real_bt.astype(jnp.int32)
    lead = jnp.argmax(real, axis=1).astype(jnp.int32)  # leading padding slots (0 for an all-padding row)
    length = jnp.maximum(real.sum(axis=1), 1).astype(jnp.int32)  # >= 1: no fully masked row (no NaN)
    q = _rotate_rows(q_btkgd.astype(dt).reshape(b, t, kh * g, d), lead)
    k = _rotate_rows(k_btkd.astype(dt), lead)
    v = _rotate_rows(v_btkd.astype(dt), lead)
    out = jax.nn.dot_product_attention(q, k, v, scale=1.0, is_causal=True, query_seq_lengths=length,
                                       key_value_seq_lengths=length, implementation=implementation)
    return _rotate_rows(out, (t - lead) % t).reshape(b, t, kh, g, d)
