"""The no-cache causal attention kernels (repirl_jax/models/attention.py) against a plain full-matrix reference
(values and gradients), the kernel choice per backend, and (marked gpu) cuDNN against the XLA path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repirl_jax.models import attention, qwen
from repirl_jax.models.config import preset

B, T, K, G, D = 3, 11, 2, 3, 8


def _inputs(seed=0, dtype=np.float32):
    rng = np.random.RandomState(seed)
    q = rng.randn(B, T, K, G, D).astype(dtype) * D ** -0.5
    k = rng.randn(B, T, K, D).astype(dtype)
    v = rng.randn(B, T, K, D).astype(dtype)
    # [left padding | real | right padding]: 2 + 7 + 2, 0 + 11 + 0, 5 + 3 + 3
    real = np.zeros((B, T), bool)
    real[0, 2:9], real[1, :], real[2, 5:8] = True, True, True
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(real)


def _reference(q, k, v, real):
    """The formula written out (the path before the kernels): an additive [B, T, T] bias, full scores."""
    slots = np.arange(T)
    visible = (slots[:, None] >= slots[None, :]) & (np.asarray(real)[:, None, :] | np.eye(T, dtype=bool))
    bias = jnp.where(jnp.asarray(visible), 0.0, attention.MASK_VALUE)  # [B, T, T]
    s = jnp.einsum("btkgd,bskd->bkgts", q, k) + bias[:, None, None]
    return jnp.einsum("bkgts,bskd->btkgd", jax.nn.softmax(s, axis=-1), v)


def _loss(fn, weights):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * weights)


@pytest.mark.parametrize("block,remat", [(0, False), (5, False), (4, True)])
def test_blocked_equals_reference_values_and_gradients(block, remat):
    q, k, v, real = _inputs()
    w = jnp.asarray(np.random.RandomState(1).randn(B, T, K, G, D).astype(np.float32))
    ours = lambda q, k, v: attention.blocked_causal_attention(q, k, v, real, block, jnp.float32, remat)  # noqa: E731
    ref = lambda q, k, v: _reference(q, k, v, real)  # noqa: E731
    np.testing.assert_allclose(jax.jit(ours)(q, k, v), ref(q, k, v), atol=1e-5, rtol=0)  # every slot
    g_ours = jax.jit(jax.grad(_loss(ours, w), argnums=(0, 1, 2)))(q, k, v)
    g_ref = jax.grad(_loss(ref, w), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_ours, g_ref):
        assert np.abs(np.asarray(b)).max() > 1e-2
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_rotated_lengths_path_equals_reference_on_real_slots():
    """The cuDNN kernel's arithmetic (rotate to right padding, is_causal + per-row lengths, rotate back) run
    through jax.nn.dot_product_attention's XLA implementation: equal on every real query slot, and so are the
    gradients of a loss that reads only real slots (as every caller's does)."""
    q, k, v, real = _inputs(2)
    w = jnp.asarray(np.random.RandomState(3).randn(B, T, K, G, D).astype(np.float32))
    w = w * real[:, :, None, None, None]
    rot = lambda q, k, v: attention.rotated_attention(q, k, v, real, jnp.float32, implementation="xla")  # noqa
    ref = lambda q, k, v: _reference(q, k, v, real)  # noqa: E731
    m = np.asarray(real)[:, :, None, None, None]
    np.testing.assert_allclose(np.asarray(jax.jit(rot)(q, k, v)) * m, np.asarray(ref(q, k, v)) * m, atol=1e-5)
    g_rot = jax.jit(jax.grad(_loss(rot, w), argnums=(0, 1, 2)))(q, k, v)
    g_ref = jax.grad(_loss(ref, w), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_rot, g_ref):
        assert np.abs(np.asarray(b)).max() > 1e-2
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert np.isfinite(np.asarray(rot(q, k, v))).all()
    # An all-padding row stays finite (length clamped to 1).
    empty = real.at[2].set(False)
    out = attention.rotated_attention(q, k, v, empty, jnp.float32, implementation="xla")
    assert np.isfinite(np.asarray(out)).all()


def test_kernel_choice_per_backend():
    assert attention.resolve_impl("auto", jnp.bfloat16, 128, backend="cpu") == "blocked"
    assert attention.resolve_impl("auto", jnp.bfloat16, 128, backend="tpu") == "blocked"
    assert attention.resolve_impl("auto", jnp.bfloat16, 128, backend="gpu") == "cudnn"
    assert attention.resolve_impl("auto", jnp.float32, 128, backend="gpu") == "blocked"  # cuDNN: fp16/bf16
    assert attention.resolve_impl("auto", jnp.bfloat16, 12, backend="gpu") == "blocked"  # head_dim % 8
    assert attention.resolve_impl("blocked", jnp.bfloat16, 128, backend="gpu") == "blocked"
    with pytest.raises(ValueError, match="attn_impl"):
        attention.resolve_impl("flash", jnp.float32, 64)
    with pytest.raises(ValueError, match="attn_impl"):
        preset("tiny-qwen2", attn_impl="flash")


def test_model_forward_unchanged_by_the_kernel_knob_on_cpu():
    """On the CPU "auto" is "blocked": the model's logits and gradients are the same for both settings."""
    cfg = preset("tiny-qwen3")
    params = qwen.init_params(cfg, jax.random.key(0))
    tokens = np.random.RandomState(0).randint(1, 256, size=(2, 9))
    mask = np.ones((2, 9), np.int32)
    mask[1, :3] = 0

    def loss(p, c):
        h, _ = qwen.forward(p, c, tokens, qwen.positions_from_mask(mask), mask)
        return jnp.sum(qwen.lm_logits(p, c, h) * mask[..., None] * 1e-2)

    a = jax.jit(jax.value_and_grad(lambda p: loss(p, cfg.replace(attn_impl="auto"))))(params)
    b = jax.jit(jax.value_and_grad(lambda p: loss(p, cfg.replace(attn_impl="blocked"))))(params)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    for x, y in zip(jax.tree.leaves(a[1]), jax.tree.leaves(b[1])):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.gpu
def test_cudnn_equals_blocked_on_gpu():
    """cuDNN flash attention (bf16) against the blocked XLA path on real slots, values and gradients."""
    rng = np.random.RandomState(4)
    b, t, kh, g, d = 2, 256, 2, 4, 64
    q = jnp.asarray(rng.randn(b, t, kh, g, d) * d ** -0.5, jnp.bfloat16)
    k = jnp.asarray(rng.randn(b, t, kh, d), jnp.bfloat16)
    v = jnp.asarray(rng.randn(b, t, kh, d), jnp.bfloat16)
    real = np.zeros((b, t), bool)
    real[0, 30:200], real[1, :] = True, True
    real = jnp.asarray(real)
    w = jnp.asarray(rng.randn(b, t, kh, g, d), jnp.float32) * real[:, :, None, None, None]

    def loss(impl):
        return lambda q, k, v: jnp.sum(attention.causal_attention(
            q, k, v, real, impl=impl, block=64, dt=jnp.bfloat16).astype(jnp.float32) * w)

    ref_val, ref_g = jax.jit(jax.value_and_grad(loss("blocked"), argnums=(0, 1, 2)))(q, k, v)
    val, g = jax.jit(jax.value_and_grad(loss("cudnn"), argnums=(0, 1, 2)))(q, k, v)
    assert abs(float(val) - float(ref_val)) <= 2e-2 * max(1.0, abs(float(ref_val)))
    for x, y in zip(g, ref_g):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        assert np.abs(x - y).max() <= 5e-2 * max(1.0, np.abs(y).max())
