"""The weight-major decode step (models/decode.py) against the model's forward pass, and the sampler on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repirl_jax.generation import continuous, sampling
from repirl_jax.generation.sampling import SamplingConfig
from repirl_jax.models import decode, qwen
from repirl_jax.models.config import QwenConfig

VARIANTS = {
    "qwen2_tied_bias": QwenConfig(model_type="qwen2", vocab_size=40, hidden_size=32, intermediate_size=48,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                  tie_word_embeddings=True),
    "qwen3_untied_norm_obias": QwenConfig(model_type="qwen3", vocab_size=40, hidden_size=32, intermediate_size=48,
                                          num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                                          head_dim=12, qkv_bias=True, o_bias=True, qk_norm=True),
    "llama3_rope_scaling": QwenConfig(model_type="llama", vocab_size=40, hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                                      qkv_bias=False, rope_theta=500000.0, rope_type="llama3", rope_factor=8.0,
                                      rope_original_max_position=16, tie_word_embeddings=True),
}


def _random_params(cfg, seed):
    """Random weights with non-trivial biases and norm scales (init gives zeros and ones)."""
    params = qwen.init_params(cfg, jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _filled_cache(cfg, b, s, index):
    cache = qwen.init_cache(cfg, b, s)
    ks = jax.random.split(jax.random.key(7), 2 * cfg.num_hidden_layers)
    valid = np.random.RandomState(0).rand(b, s) < 0.7
    return cache._replace(k=tuple(jax.random.normal(k, x.shape) for k, x in zip(ks, cache.k)),
                          v=tuple(jax.random.normal(k, x.shape) for k, x in zip(ks[cfg.num_hidden_layers:], cache.v)),
                          valid=jnp.asarray(valid), index=index)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("per_row_index", [False, True])
def test_decode_step_equals_the_model_forward(variant, per_row_index):
    cfg = VARIANTS[variant]
    params = _random_params(cfg, 0)
    b, s = 5, 11
    index = jnp.asarray([3, 10, 0, 7, 5], jnp.int32) if per_row_index else jnp.asarray(6, jnp.int32)
    cache = _filled_cache(cfg, b, s, index)
    token = jnp.asarray([1, 39, 0, 17, 5], jnp.int32)
    position = jnp.asarray([4, 9, 0, 30, 2], jnp.int32)
    mask = jnp.asarray([1, 1, 0, 1, 1], jnp.int32)
    hidden, ref_cache = jax.jit(lambda p, c: qwen.forward(p, cfg, token[:, None], position[:, None], mask[:, None],
                                                          c))(params, cache)
    ref = qwen.lm_logits(params, cfg, hidden)[:, 0]
    dw = decode.decode_weights(params, cfg)
    logits, new_cache = jax.jit(lambda w, c: decode.decode_step(w, cfg, token, position, mask, c))(dw, cache)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), atol=2e-5, rtol=1e-5)
    for a, r in zip(new_cache.k + new_cache.v, ref_cache.k + ref_cache.v):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(new_cache.valid), np.asarray(ref_cache.valid))
    np.testing.assert_array_equal(np.asarray(new_cache.index), np.asarray(ref_cache.index))
    np.testing.assert_allclose(np.asarray(decode.head_logits(dw, hidden[:, 0])), np.asarray(ref), atol=2e-5)


def _same(a, b, atol=2e-5):
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_array_equal(np.asarray(a.lengths), np.asarray(b.lengths))
    np.testing.assert_allclose(np.asarray(a.log_probs), np.asarray(b.log_probs), atol=atol)


@pytest.mark.parametrize("variant,greedy", [("qwen2_tied_bias", True), ("qwen3_untied_norm_obias", False)])
def test_sampler_tokens_and_log_probs_equal_on_both_kernels(variant, greedy):
    cfg = VARIANTS[variant]
    params = _random_params(cfg, 1)
    tokens, mask = (jnp.asarray(x) for x in sampling.pad_prompts([[1, 2, 3], [4], [5, 6, 7, 8], [9, 10]], 4))
    base = dict(max_new_tokens=9, greedy=greedy, num_samples=2, stop_token_ids=(3,), slot_bucket=4)
    ref = sampling.generate(params, cfg, tokens, mask, SamplingConfig(**base, decode_impl="model"), jax.random.key(3))
    out = sampling.generate(params, cfg, tokens, mask, SamplingConfig(**base, decode_impl="weight_major"),
                            jax.random.key(3))
    _same(out, ref)
    assert int(np.asarray(ref.lengths).max()) > 4  # the decode ran past the first length bucket
    cont = SamplingConfig(**base, decode_impl="weight_major", row_keys=True)
    _same(continuous.generate(params, cfg, tokens, mask, cont, jax.random.key(3), rows=3),
          sampling.generate(params, cfg, tokens, mask, SamplingConfig(**base, decode_impl="model", row_keys=True),
                            jax.random.key(3)))


def test_auto_is_weight_major_on_cpu_and_bad_names_fail():
    cfg = VARIANTS["qwen2_tied_bias"]
    params = qwen.init_params(cfg, jax.random.key(0))
    jaxpr = str(jax.make_jaxpr(lambda p: sampling.make_decoder(p, cfg, "auto", None).logits(
        jnp.ones((2, cfg.hidden_size))))(params))
    assert jax.default_backend() != "cpu" or "optimization_barrier" in jaxpr
    with pytest.raises(ValueError, match="decode_impl"):
        SamplingConfig(max_new_tokens=4, decode_impl="fast")
