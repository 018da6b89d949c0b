"""The Qwen decoder against transformers (the reference), logit by logit, and its own invariants."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from repirl_jax.checkpoints import hf
from repirl_jax.models import qwen
from repirl_jax.models.config import ConfigError, QwenConfig, preset


def _batch(seed=0, lengths=(12, 9, 5, 1), vocab=256):
    rng = np.random.RandomState(seed)
    t = max(lengths)
    tokens = rng.randint(1, vocab, size=(len(lengths), t))
    mask = np.zeros((len(lengths), t), np.int32)
    for i, n in enumerate(lengths):
        mask[i, t - n:] = 1
    return tokens * mask, mask


@functools.partial(jax.jit, static_argnums=1)
def _logits(params, cfg, tokens, mask):
    h, _ = qwen.forward(params, cfg, tokens, qwen.positions_from_mask(mask), mask)
    return qwen.lm_logits(params, cfg, h)


@functools.partial(jax.jit, static_argnums=1)
def _step(params, cfg, tokens, positions, mask, cache):
    h, cache = qwen.forward(params, cfg, tokens, positions, mask, cache)
    return qwen.lm_logits(params, cfg, h), cache


def _ours(params, cfg, tokens, mask):
    return np.asarray(_logits(params, cfg, jnp.asarray(tokens), jnp.asarray(mask)))


@pytest.mark.parametrize("variant", ["qwen2_untied_bias", "qwen2_tied", "qwen3_qknorm", "llama_tied",
                                     "llama31_rope_scaling"])
def test_logits_match_transformers_left_padded(hf_checkpoints, variant):
    path = hf_checkpoints[variant]
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    params, cfg = hf.load_hf_params(path)
    tokens, mask = _batch()
    with torch.no_grad():
        expected = ref(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    got = _ours(params, cfg, tokens, mask)
    diff = np.abs(got - expected) * mask[..., None]
    assert diff.max() <= 1e-4, diff.max()
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero tensors


@pytest.mark.parametrize("variant", ["qwen2_untied_bias", "qwen3_qknorm", "llama31_rope_scaling"])
def test_left_padding_invariance(hf_checkpoints, variant):
    params, cfg = hf.load_hf_params(hf_checkpoints[variant])
    tokens, mask = _batch(seed=1)
    batched = _ours(params, cfg, tokens, mask)
    for i in range(tokens.shape[0]):
        n = int(mask[i].sum())
        alone = _ours(params, cfg, tokens[i:i + 1, -n:], mask[i:i + 1, -n:])
        np.testing.assert_allclose(batched[i, -n:], alone[0], atol=1e-5, rtol=0)


def test_kv_cache_prefill_then_decode_equals_full_forward():
    cfg = preset("tiny-qwen3")
    params = qwen.init_params(cfg, jax.random.key(0))
    tokens, mask = _batch(seed=2, lengths=(10, 6, 3))
    full = _ours(params, cfg, tokens, mask)
    # Prefill the first 7 slots, then feed the remaining 3 tokens one at a time.
    cache = qwen.init_cache(cfg, batch=3, length=16)
    pos = np.asarray(qwen.positions_from_mask(jnp.asarray(mask)))
    logits, cache = _step(params, cfg, jnp.asarray(tokens[:, :7]), jnp.asarray(pos[:, :7]),
                          jnp.asarray(mask[:, :7]), cache)
    outs = [np.asarray(logits)]
    for t in range(7, 10):
        logits, cache = _step(params, cfg, jnp.asarray(tokens[:, t:t + 1]), jnp.asarray(pos[:, t:t + 1]),
                              jnp.asarray(mask[:, t:t + 1]), cache)
        outs.append(np.asarray(logits))
    stepped = np.concatenate(outs, axis=1)
    np.testing.assert_allclose(stepped * mask[..., None], full * mask[..., None], atol=1e-5, rtol=0)
    assert np.asarray(cache.index).tolist() == [10, 10, 10]


def test_kv_cache_rows_write_at_their_own_index():
    """Two rows at different cache indices decode exactly as each would alone."""
    cfg = preset("tiny-qwen2")
    params = qwen.init_params(cfg, jax.random.key(1))
    rng = np.random.RandomState(3)
    seqs = [rng.randint(1, 256, size=n) for n in (6, 3)]
    # Alone: full forward of each sequence.
    alone = [_ours(params, cfg, s[None], np.ones((1, len(s)), np.int32))[0, -1] for s in seqs]
    # Together: right-aligned prompts would share an index; instead prefill each row separately into
    # one cache by writing rows at their own indices (row 1 prefilled with 2 tokens, row 0 with 5).
    cache = qwen.init_cache(cfg, batch=2, length=8)
    first = np.zeros((2, 5), np.int64)
    fmask = np.zeros((2, 5), np.int32)
    first[0, :5], fmask[0, :5] = seqs[0][:5], 1
    first[1, :2], fmask[1, :2] = seqs[1][:2], 1
    pos = np.tile(np.arange(5), (2, 1))
    _, cache = _step(params, cfg, jnp.asarray(first), jnp.asarray(pos), jnp.asarray(fmask), cache)
    # Rewind row 1's write index to just after its real tokens.
    cache = cache._replace(index=jnp.asarray([5, 2], jnp.int32))
    last = np.array([[seqs[0][5]], [seqs[1][2]]])
    got, _ = _step(params, cfg, jnp.asarray(last), jnp.asarray([[5], [2]]), jnp.ones((2, 1), np.int32), cache)
    got = np.asarray(got)[:, 0]
    np.testing.assert_allclose(got[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(got[1], alone[1], atol=1e-5)


def test_bfloat16_and_remat_run_close_to_float32():
    cfg = preset("tiny-qwen3")
    params = qwen.init_params(cfg, jax.random.key(2))
    tokens, mask = _batch(seed=4)
    f32 = _ours(params, cfg, tokens, mask)
    remat = _ours(params, cfg.replace(remat="full"), tokens, mask)
    np.testing.assert_allclose(remat, f32, atol=1e-6)
    bf16 = _ours(params, cfg.replace(dtype="bfloat16"), tokens, mask)
    assert bf16.dtype == np.float32  # logits always float32
    assert np.abs(bf16 - f32).max() < 0.05 * np.abs(f32).max()


def _lm_loss_grad(tokens, mask):
    """grad(params, cfg) of the mean next-token NLL of a left-padded batch (jitted; cfg static)."""
    def loss(p, c):
        m = jnp.asarray(mask)
        h, _ = qwen.forward(p, c, jnp.asarray(tokens), qwen.positions_from_mask(m), m)
        lp = qwen.token_log_probs(qwen.lm_logits(p, c, h)[:, :-1], jnp.asarray(tokens)[:, 1:])
        return -(lp * m[:, 1:]).sum() / m[:, 1:].sum()
    return jax.jit(jax.grad(loss), static_argnums=1)


def test_rotary_values_and_gradient_equal_the_plain_formula():
    """qwen.rotary (looked-up angles, a rotation-transpose backward) against rotate-half RoPE written out in
    numpy (values) and through autodiff (gradients), at positions with padding zeros and a large one."""
    rng = np.random.RandomState(0)
    d, theta = 16, 10000.0
    x = rng.normal(size=(2, 5, 3, d)).astype(np.float32)
    pos = np.asarray([[0, 0, 1, 2, 3], [4, 5, 6, 7, 1000]], np.int32)
    inv = (1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)).astype(np.float32)
    ang = pos[..., None, None].astype(np.float32) * inv  # [B, T, 1, D/2], float32 angles as in HF
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    ref = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)
    rope = qwen.rope_tables(jnp.asarray(pos), qwen.rope_inv_freq(preset("tiny-qwen3", head_dim=d, rope_theta=theta)), 2048)
    np.testing.assert_allclose(np.asarray(qwen.rotary(jnp.asarray(x), rope)), ref, atol=2e-5)

    def plain(x):
        a = jnp.asarray(pos, jnp.float32)[..., None, None] * jnp.asarray(inv, jnp.float32)
        y1, y2 = x[..., : d // 2], x[..., d // 2:]
        return jnp.concatenate([y1 * jnp.cos(a) - y2 * jnp.sin(a), y2 * jnp.cos(a) + y1 * jnp.sin(a)], -1)
    w = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
    g = jax.grad(lambda x: jnp.sum(qwen.rotary(x, rope) * w))(jnp.asarray(x))
    g_ref = jax.grad(lambda x: jnp.sum(plain(x) * w))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=2e-5)
    assert float(jnp.max(jnp.abs(g))) > 0.1  # a real gradient, not zeros


def test_remat_gradient_equals_plain_gradient():
    cfg = preset("tiny-qwen2")
    params = qwen.init_params(cfg, jax.random.key(3))
    tokens, mask = _batch(seed=5)

    grad = _lm_loss_grad(tokens, mask)
    g1 = grad(params, cfg)
    g2 = grad(params, cfg.replace(remat="full"))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("block", [1, 5, 0])
def test_blocked_attention_matches_transformers(hf_checkpoints, block):
    """Query blocks of `attn_block` positions (here 1, 5: blocks of unequal key range and a last partial
    block; 0: one block) give transformers' logits on every real position of a left-padded batch."""
    path = hf_checkpoints["qwen2_tied"]
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    params, cfg = hf.load_hf_params(path)
    cfg = cfg.replace(attn_block=block)
    tokens, mask = _batch(seed=6, lengths=(12, 7, 12, 2))
    with torch.no_grad():
        expected = ref(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    got = _ours(params, cfg, tokens, mask)
    assert np.abs(got - expected)[mask.astype(bool)].max() <= 1e-4
    assert np.abs(expected).max() > 0.1


def test_blocked_attention_gradient_equals_one_block():
    cfg = preset("tiny-qwen3")
    params = qwen.init_params(cfg, jax.random.key(4))
    tokens, mask = _batch(seed=7)

    grad = _lm_loss_grad(tokens, mask)
    g1 = grad(params, cfg.replace(attn_block=0))
    g2 = grad(params, cfg.replace(attn_block=5))
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g1)) > 1e-3
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_config_from_hf_and_presets(tmp_path, hf_checkpoints):
    cfg = QwenConfig.from_hf_dir(hf_checkpoints["qwen3_qknorm"])
    assert (cfg.model_type, cfg.head_dim, cfg.num_key_value_heads, cfg.qk_norm, cfg.qkv_bias) == \
        ("qwen3", 32, 1, True, False)
    cfg2 = QwenConfig.from_hf_dir(hf_checkpoints["qwen2_tied"])
    assert cfg2.tie_word_embeddings and cfg2.qkv_bias and cfg2.rope_theta == 1_000_000.0
    # Our parameter count equals transformers' for every variant.
    for variant, path in hf_checkpoints.items():
        ref = transformers.AutoModelForCausalLM.from_pretrained(path)
        assert QwenConfig.from_hf_dir(path).num_params() == sum(p.numel() for p in ref.parameters()), variant
    # Real-size presets: parameter counts of the public checkpoints.
    assert abs(preset("qwen2.5-3b").num_params() / 1e9 - 3.09) < 0.01
    assert abs(preset("qwen3-4b").num_params() / 1e9 - 4.02) < 0.01


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "mistral", "hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"config.json: model_type='mistral' is not supported"):
        QwenConfig.from_hf_dir(str(bad))
    (bad / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"config.json: missing field 'num_attention_heads'"):
        QwenConfig.from_hf_dir(str(bad))
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        QwenConfig.from_hf_dir(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        QwenConfig.from_hf_dir(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="unknown model preset"):
        preset("qwen9-1t")


def test_inference_params_give_the_same_logits():
    """The sampler's weight copy (compute dtype for what the forward casts, norm scales as stored) gives
    bit-identical hidden states with bfloat16 compute and float32 storage."""
    q = qwen
    cfg = preset("tiny-qwen3", dtype="bfloat16", param_dtype="float32")
    params = q.init_params(cfg, jax.random.key(0))
    copy = q.inference_params(params, cfg)
    assert copy["layer_0"]["attn"]["q_kernel"].dtype == jnp.bfloat16
    assert copy["layer_0"]["input_norm"]["scale"].dtype == jnp.float32
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, cfg.vocab_size)
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    mask = jnp.ones((2, 9), jnp.int32)
    fwd = jax.jit(lambda p: q.forward(p, cfg, tokens, pos, mask)[0])
    a, b = fwd(params), fwd(copy)
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.parametrize("remat", ["none", "full"])
def test_blockwise_attention_equals_whole_attention(remat):
    """Query blocks of 4 over a 10-token, left-padded batch (10 is not a multiple of 4): the same hidden
    states and the same parameter gradients as attention over all rows at once."""
    cfg = preset("tiny-qwen3", dtype="float32", remat=remat)
    params = qwen.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, cfg.vocab_size)
    mask = jnp.asarray([[1] * 10, [0] * 3 + [1] * 7, [0] * 9 + [1]], jnp.int32)
    pos = qwen.positions_from_mask(mask)

    def loss(p, c):
        h, _ = qwen.forward(p, c, tokens, pos, mask)
        return jnp.sum(jnp.sin(h) * mask[..., None]), h

    whole = jax.jit(jax.value_and_grad(lambda p: loss(p, cfg.replace(attn_block=0)), has_aux=True))(params)
    blocks = jax.jit(jax.value_and_grad(lambda p: loss(p, cfg.replace(attn_block=4)), has_aux=True))(params)
    np.testing.assert_allclose(np.asarray(blocks[0][1]), np.asarray(whole[0][1]), atol=2e-5)
    for a, b in zip(jax.tree.leaves(blocks[1]), jax.tree.leaves(whole[1])):
        scale = float(np.abs(np.asarray(b)).max())  # float32 rounding relative to the leaf's gradients
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4 * max(scale, 1.0), rtol=1e-4)
