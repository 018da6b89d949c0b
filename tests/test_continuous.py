"""Length-bucketed decode and continuous batching against the static sampler: tokens, log-probs, keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repirl_jax.generation import continuous, sampling
from repirl_jax.generation.sampling import SamplingConfig
from repirl_jax.models import qwen
from repirl_jax.models.config import QwenConfig

CFG = QwenConfig(model_type="qwen3", vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=8, qkv_bias=False, qk_norm=True)
PROMPTS = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11, 12]]


@pytest.fixture(scope="module")
def setup():
    params = qwen.init_params(CFG, jax.random.key(0))
    tokens, mask = sampling.pad_prompts(PROMPTS, 5)
    return params, jnp.asarray(tokens), jnp.asarray(mask)


def _same(a, b, atol=1e-5):
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_array_equal(np.asarray(a.lengths), np.asarray(b.lengths))
    np.testing.assert_array_equal(np.asarray(a.finish_reason), np.asarray(b.finish_reason))
    np.testing.assert_allclose(np.asarray(a.log_probs), np.asarray(b.log_probs), atol=atol)


@pytest.mark.parametrize("greedy", [True, False])
def test_length_buckets_equal_one_full_cache_segment(setup, greedy):
    params, tokens, mask = setup
    base = SamplingConfig(max_new_tokens=13, greedy=greedy, num_samples=2, stop_token_ids=(3,), slot_bucket=0)
    ref = sampling.generate(params, CFG, tokens, mask, base, jax.random.key(5))
    assert sampling.segment_ends(13, 4) == [4, 8, 12, 13]
    out = sampling.generate(params, CFG, tokens, mask, SamplingConfig(**{**base.__dict__, "slot_bucket": 4}),
                            jax.random.key(5))
    _same(out, ref)
    assert (np.asarray(ref.lengths) > 4).any()  # some row decodes past the first segment


@pytest.mark.parametrize("greedy", [True, False])
def test_continuous_equals_static_with_row_keys(setup, greedy):
    params, tokens, mask = setup
    scfg = SamplingConfig(max_new_tokens=12, greedy=greedy, num_samples=2, stop_token_ids=(3,), row_keys=True)
    budgets = np.random.RandomState(0).randint(1, 13, size=10)
    ref = sampling.generate(params, CFG, tokens, mask, scfg, jax.random.key(5), max_new_rows=budgets)
    assert (np.asarray(ref.lengths) <= budgets).all() and (np.asarray(ref.lengths) == budgets).any()
    for rows in (1, 3, 4):  # the slot a sample lands in, and the rows beside it, change with `rows`
        _same(continuous.generate(params, CFG, tokens, mask, scfg, jax.random.key(5), rows=rows,
                                  max_new_rows=budgets), ref)


def test_continuous_greedy_equals_todays_sampler(setup):
    params, tokens, mask = setup
    todays = SamplingConfig(max_new_tokens=10, greedy=True, stop_token_ids=(3, 7), slot_bucket=0)
    ref = sampling.generate(params, CFG, tokens, mask, todays)
    _same(continuous.generate(params, CFG, tokens, mask, todays, rows=2), ref)


def test_a_sample_does_not_depend_on_its_batch(setup):
    """Prompt 3's samples are the same decoded with all five prompts, alone in a padded queue, or in a
    static batch of its own, given its global index."""
    params, tokens, mask = setup
    scfg = SamplingConfig(max_new_tokens=12, temperature=1.3, num_samples=3, row_keys=True)
    full = continuous.generate(params, CFG, tokens, mask, scfg, jax.random.key(9), rows=4)
    pad_t = jnp.concatenate([tokens[3:4], tokens[:1]])  # prompt 3, then a padding prompt that never runs
    pad_m = jnp.concatenate([mask[3:4], mask[:1]])
    alone = continuous.generate(params, CFG, pad_t, pad_m, scfg, jax.random.key(9), rows=2, num_prompts=1,
                                prompt_index=[3, 4])
    static = sampling.generate(params, CFG, tokens[3:4], mask[3:4], scfg, jax.random.key(9), prompt_index=[3])
    rows = slice(9, 12)
    for other in (alone.tokens[:3], static.tokens):
        np.testing.assert_array_equal(np.asarray(other), np.asarray(full.tokens[rows]))
    np.testing.assert_allclose(np.asarray(alone.log_probs[:3]), np.asarray(full.log_probs[rows]), atol=1e-5)
    assert np.asarray(alone.lengths[3:]).tolist() == [0, 0, 0]  # the padding prompt's rows are empty
    assert len({tuple(r) for r in np.asarray(full.tokens[rows]).tolist()}) > 1  # samples are distinct draws


def test_continuous_log_probs_equal_a_full_forward_pass(setup):
    params, tokens, mask = setup
    scfg = SamplingConfig(max_new_tokens=9, temperature=0.8, top_k=10, num_samples=2, stop_token_ids=(3,))
    out = continuous.generate(params, CFG, tokens, mask, scfg, jax.random.key(2), rows=3)
    seq = np.concatenate([np.repeat(np.asarray(tokens), 2, 0), np.asarray(out.tokens)], axis=1)
    m = np.concatenate([np.repeat(np.asarray(mask), 2, 0), np.asarray(out.mask)], axis=1)
    h, _ = qwen.forward(params, CFG, jnp.asarray(seq), qwen.positions_from_mask(jnp.asarray(m)), jnp.asarray(m))
    logits = qwen.lm_logits(params, CFG, h)[:, tokens.shape[1] - 1:-1]
    filtered = jax.vmap(lambda x: sampling.filter_logits(x, scfg))(logits)
    expected = jnp.take_along_axis(jax.nn.log_softmax(filtered, -1), jnp.asarray(out.tokens)[..., None], -1)[..., 0]
    expected = np.where(np.asarray(out.mask) == 1, np.asarray(expected), 0.0)  # after a row's end: 0
    np.testing.assert_allclose(np.asarray(out.log_probs), expected, atol=1e-4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="slot_bucket"):
        SamplingConfig(max_new_tokens=4, slot_bucket=-1)
    params = qwen.init_params(CFG, jax.random.key(0))
    t, m = sampling.pad_prompts(PROMPTS[:2], 5)
    with pytest.raises(ValueError, match="max_new_rows has shape"):
        sampling.generate(params, CFG, jnp.asarray(t), jnp.asarray(m), SamplingConfig(max_new_tokens=4),
                          max_new_rows=[1, 2, 3])
    with pytest.raises(ValueError, match="rows=0"):
        continuous.generate(params, CFG, jnp.asarray(t), jnp.asarray(m), SamplingConfig(max_new_tokens=4), rows=0)


def test_text_generator_continuous_matches_static_batches():
    from repirl_jax.data import synthetic
    from repirl_jax.generation import completions
    tok = synthetic.CharTokenizer()
    cfg = CFG.replace(vocab_size=-(-len(tok) // 8) * 8, eos_token_id=(1,))
    params = qwen.init_params(cfg, jax.random.key(4))
    prompts = ["12+3=", "7*8=", "1=", "99-4=", "5="]
    scfg = SamplingConfig(max_new_tokens=8, greedy=True)
    static = completions.TextGenerator(params, cfg, tok, 8, 2).generate(prompts, scfg, jax.random.key(0))
    cont = completions.TextGenerator(params, cfg, tok, 8, 2, continuous=True).generate(prompts, scfg,
                                                                                      jax.random.key(0))
    assert [[c.token_ids for c in row] for row in cont] == [[c.token_ids for c in row] for row in static]
    assert [row[0].text for row in cont] == [row[0].text for row in static]
