"""The jitted KV-cache sampler: greedy parity with transformers, exact log-probs, sampling statistics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from repirl_jax.checkpoints import hf
from repirl_jax.generation import sampling
from repirl_jax.generation.sampling import SamplingConfig
from repirl_jax.models import qwen
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime.sharding import ActivationSharding, make_mesh

PROMPTS = [[5, 17, 33, 2, 9, 100, 41, 7, 77, 12], [64, 3, 19, 250], [8], [200, 201, 202, 203, 204, 205]]


# prefill_chunk 4: the 12-token prompts are prefilled in a scan of 3 chunks (512: one pass).
@pytest.mark.parametrize("variant,prefill_chunk", [("qwen2_untied_bias", 512), ("qwen3_qknorm", 512),
                                                   ("qwen2_tied", 512), ("qwen3_qknorm", 4), ("llama_tied", 512),
                                                   ("llama31_rope_scaling", 4)])
def test_greedy_equals_transformers_generate(hf_checkpoints, variant, prefill_chunk):
    path = hf_checkpoints[variant]
    params, cfg = hf.load_hf_params(path)
    tokens, mask = sampling.pad_prompts(PROMPTS, max_prompt_len=12)
    out = sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask),
                            SamplingConfig(max_new_tokens=40, greedy=True, prefill_chunk=prefill_chunk))
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = ref.generate(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask),
                                max_new_tokens=40, min_new_tokens=40, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[:, 12:].numpy()
    np.testing.assert_array_equal(np.asarray(out.tokens), expected)
    assert np.asarray(out.lengths).tolist() == [40] * 4
    assert np.asarray(out.finish_reason).tolist() == [sampling.FINISH_LENGTH] * 4


def _full_forward_logp(params, cfg, tokens, mask, out, temperature=1.0):
    """Log-probs of the sampled tokens from one forward pass over prompt + response."""
    n = out.tokens.shape[0] // tokens.shape[0]
    seq = np.concatenate([np.repeat(tokens, n, 0), np.asarray(out.tokens)], axis=1)
    m = np.concatenate([np.repeat(mask, n, 0), np.asarray(out.mask)], axis=1)
    h, _ = jax.jit(qwen.forward, static_argnums=1)(params, cfg, jnp.asarray(seq),
                                                    qwen.positions_from_mask(jnp.asarray(m)), jnp.asarray(m))
    logits = qwen.lm_logits(params, cfg, h)[:, tokens.shape[1] - 1:-1] / temperature
    return np.asarray(qwen.token_log_probs(logits, jnp.asarray(out.tokens))) * np.asarray(out.mask)


@pytest.mark.parametrize("temperature,prefill_chunk", [(1.0, 512), (0.7, 3)])
def test_log_probs_equal_a_full_forward_pass(hf_checkpoints, temperature, prefill_chunk):
    params, cfg = hf.load_hf_params(hf_checkpoints["qwen3_qknorm"])
    tokens, mask = sampling.pad_prompts(PROMPTS, max_prompt_len=12)
    out = sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask),
                            SamplingConfig(max_new_tokens=24, temperature=temperature, num_samples=3,
                                           stop_token_ids=(3, 4, 5), prefill_chunk=prefill_chunk),
                            jax.random.key(1))
    expected = _full_forward_logp(params, cfg, tokens, mask, out, temperature)
    np.testing.assert_allclose(np.asarray(out.log_probs), expected, atol=1e-4)
    assert out.tokens.shape == (12, 24)
    # Samples of one prompt differ (they are not copies of one draw).
    assert len({tuple(r) for r in np.asarray(out.tokens)[:3].tolist()}) > 1


def test_per_row_stop_lengths_and_padding():
    cfg = QwenConfig(model_type="qwen3", vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=16, qkv_bias=False, qk_norm=True)
    params = qwen.init_params(cfg, jax.random.key(0))
    tokens, mask = sampling.pad_prompts([[1, 2, 3], [4], [5, 6]], max_prompt_len=4)
    scfg = SamplingConfig(max_new_tokens=30, stop_token_ids=(7, 11), pad_token_id=0)
    out = sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), scfg, jax.random.key(3))
    toks, lengths, finish = (np.asarray(x) for x in (out.tokens, out.lengths, out.finish_reason))
    for row in range(3):
        n = lengths[row]
        stopped = np.isin(toks[row, :n], [7, 11])
        if finish[row] == sampling.FINISH_STOP:
            assert stopped[-1] and not stopped[:-1].any()  # ends on its first stop token
        else:
            assert n == 30 and not stopped.any()
        assert (toks[row, n:] == 0).all() and (np.asarray(out.log_probs)[row, n:] == 0).all()
    assert (finish == sampling.FINISH_STOP).any()  # with 16 tokens and 2 stop ids, some row stops


def _exact_probs(logits, temperature, top_k, top_p):
    x = logits / temperature
    if top_k:
        x = np.where(x < np.sort(x)[-top_k], -np.inf, x)
    p = np.exp(x - x.max())
    p /= p.sum()
    if top_p < 1:
        order = np.argsort(-p)
        before = np.cumsum(p[order]) - p[order]
        keep = np.zeros_like(p, bool)
        keep[order[before < top_p]] = True
        p = np.where(keep, p, 0)
        p /= p.sum()
    return p


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.3, 5, 1.0),
                                                      (1.0, 0, 0.6), (0.8, 6, 0.9)])
def test_sampled_distribution_matches_the_exact_one(temperature, top_k, top_p):
    logits = np.random.RandomState(0).normal(size=(12,)).astype(np.float32) * 1.5
    scfg = SamplingConfig(max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p)
    n = 40_000
    tok, logp = jax.jit(lambda k: sampling.sample_logits(jnp.tile(logits, (n, 1)), k, scfg))(jax.random.key(42))
    tok, logp = np.asarray(tok), np.asarray(logp)
    exact = _exact_probs(logits.astype(np.float64), temperature, top_k, top_p)
    freq = np.bincount(tok, minlength=12) / n
    assert (freq[exact == 0] == 0).all()  # filtered tokens are never drawn
    # Every frequency within 5 standard errors of its probability (a seeded test: deterministic).
    se = np.sqrt(exact * (1 - exact) / n)
    assert (np.abs(freq - exact) <= 5 * se + 1e-12).all(), (freq, exact)
    np.testing.assert_allclose(logp, np.log(exact[tok]), atol=1e-5)  # log-prob of the sampling distribution


def test_same_shapes_never_recompile(hf_checkpoints):
    params, cfg = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"])
    scfg = SamplingConfig(max_new_tokens=8, temperature=1.0)
    tokens, mask = sampling.pad_prompts(PROMPTS[:2], max_prompt_len=16, batch_size=4)
    sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), scfg, jax.random.key(0))
    before = sampling.compile_count()
    for seed, prompts in enumerate([PROMPTS[1:], PROMPTS[:1], PROMPTS]):
        tokens, mask = sampling.pad_prompts(prompts, max_prompt_len=16, batch_size=4)
        sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), scfg, jax.random.key(seed))
    assert sampling.compile_count() == before


def test_sampler_under_a_mesh_matches_one_device(hf_checkpoints):
    params, cfg = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"])
    tokens, mask = sampling.pad_prompts(PROMPTS * 2, max_prompt_len=12)
    scfg = SamplingConfig(max_new_tokens=16, greedy=True)
    ref = sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), scfg)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded, _ = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"], mesh=mesh)
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    out = sampling.generate(sharded, cfg, jax.device_put(tokens, batch), jax.device_put(mask, batch), scfg,
                            act=ActivationSharding(mesh))
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    np.testing.assert_allclose(np.asarray(out.log_probs), np.asarray(ref.log_probs), atol=1e-5)


def test_pad_prompts_and_config_errors():
    tokens, mask = sampling.pad_prompts([[1, 2], [3]], max_prompt_len=3, batch_size=3)
    assert tokens.tolist() == [[0, 1, 2], [0, 0, 3], [0, 0, 0]] and mask.sum() == 3
    with pytest.raises(ValueError, match="prompt 0 has 4 tokens, more than max_prompt_len=3"):
        sampling.pad_prompts([[1, 2, 3, 4]], max_prompt_len=3)
    assert sampling.pad_prompts([[1, 2, 3, 4]], 3, truncate="left")[0].tolist() == [[2, 3, 4]]
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(max_new_tokens=4, temperature=0.0)


def _char_model_recording_widths(monkeypatch):
    """(CharTokenizer, a tiny Qwen3 config, its random params, the list every rollout.generate call appends
    its prompt width to)."""
    from repirl_jax.data import synthetic
    from repirl_jax.generation import rollout
    tok = synthetic.CharTokenizer()
    cfg = QwenConfig(model_type="qwen3", vocab_size=-(-len(tok) // 8) * 8, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=8, qkv_bias=False,
                     qk_norm=True, eos_token_id=(1,))
    params = qwen.init_params(cfg, jax.random.key(3))
    widths = []
    real_generate = rollout.generate
    monkeypatch.setattr(rollout, "generate", lambda p, c, t, *a, **k: widths.append(t.shape[1]) or
                        real_generate(p, c, t, *a, **k))
    return tok, cfg, params, widths


def test_prompt_padding_follows_the_batch(monkeypatch):
    """pad_prompts(fit=True) pads a batch to its longest prompt rounded up to a bucket, not to max_prompt_len;
    TextGenerator (evaluate, make_experts) samples at that width, with the tokens of full-width padding."""
    from repirl_jax.generation import completions
    assert [sampling.prompt_bucket(n, 1535) for n in (1, 16, 17, 150, 193, 1024, 1025, 5000)] == \
        [16, 16, 24, 192, 256, 1024, 1535, 1535]
    assert sampling.prompt_bucket(150, 100) == 100  # never wider than max_prompt_len
    tokens, mask = sampling.pad_prompts([[1, 2, 3], [4] * 20], 1535, batch_size=4, fit=True)
    assert tokens.shape == mask.shape == (4, 24) and mask.sum(1).tolist() == [3, 20, 0, 0]
    assert sampling.pad_prompts([[1, 2, 3]], 1535)[0].shape == (1, 1535)  # fixed width without fit

    tok, cfg, params, widths = _char_model_recording_widths(monkeypatch)
    prompts = ["12+3=", "7*8*2*2*1=", "1=", "99-4+1+1+1+1+1+1+1+1+1+1="]
    scfg = SamplingConfig(max_new_tokens=6, greedy=True)
    got = completions.TextGenerator(params, cfg, tok, 512, 2).generate(prompts, scfg, jax.random.key(0))
    assert widths == [16, 32]  # batch 1: longest 11 tokens -> 16; batch 2: 26 tokens -> 32 (not 512)
    for start, row in zip((0, 2), (got[:2], got[2:])):
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[start:start + 2]]
        t, m = sampling.pad_prompts(ids, 512)  # the same prompts at full width
        full = sampling.generate(params, cfg, jnp.asarray(t), jnp.asarray(m),
                                 dataclasses.replace(scfg, stop_token_ids=(1,), pad_token_id=tok.pad_token_id or 0))
        assert [c.token_ids for r in row for c in r] == [np.asarray(full.tokens[i, :int(full.lengths[i])]).tolist()
                                                         for i in range(2)]


def test_a_batch_one_bucket_narrower_reuses_the_wider_program(monkeypatch):
    """TextGenerator: a batch whose bucket is one step below a width already sampled at (same SamplingConfig)
    is padded to that width (no second compile), with the tokens its own width gives; two steps below, or
    under another SamplingConfig, it gets its own bucket."""
    from repirl_jax.generation import completions
    tok, cfg, params, widths = _char_model_recording_widths(monkeypatch)
    n_tokens = lambda p: len(tok(p, add_special_tokens=False)["input_ids"])  # noqa: E731
    prompt = lambda n: ("1+" * n)[:n - 1] + "="  # noqa: E731
    assert [n_tokens(prompt(n)) for n in (20, 10, 40, 30)] == [20, 10, 40, 30]
    scfg = SamplingConfig(max_new_tokens=4, greedy=True)
    gen = completions.TextGenerator(params, cfg, tok, 512, 1)
    got = gen.generate([prompt(n) for n in (40, 30, 20, 10)], scfg, jax.random.key(0))
    assert widths == [48, 48, 24, 24]  # 30 -> 32 -> 48 (sampled at); 20 -> 24 (48 is two steps up); 10 -> 16 -> 24
    own = completions.TextGenerator(params, cfg, tok, 512, 1).generate([prompt(10)], scfg, jax.random.key(0))
    assert widths[-1] == 16 and own[0][0].token_ids == got[3][0].token_ids  # same tokens at its own width
    gen.generate([prompt(10)], dataclasses.replace(scfg, max_new_tokens=3), jax.random.key(0))
    assert widths[-1] == 16  # another SamplingConfig: another program anyway, at the batch's own bucket


@pytest.mark.parametrize("prefill_chunk", [512, 4])
def test_packed_prefill_samples_what_the_padded_one_does(hf_checkpoints, prefill_chunk):
    """SamplingConfig.prefill_pack: the prompts' real tokens in one row (each attending to itself only),
    gathered back into the padded cache, give the padded prefill's samples (whole and chunked prefill)."""
    params, cfg = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"])
    tokens, mask = sampling.pad_prompts(PROMPTS, max_prompt_len=12, batch_size=5)  # 21 real tokens, one empty row
    scfg = SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=2, prefill_chunk=prefill_chunk)
    padded = sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), scfg, jax.random.key(7))
    packed = sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask),
                               dataclasses.replace(scfg, prefill_pack=24), jax.random.key(7))
    real = 2 * len(PROMPTS)  # the empty row's samples are padding either way
    np.testing.assert_array_equal(np.asarray(packed.tokens)[:real], np.asarray(padded.tokens)[:real])
    np.testing.assert_array_equal(np.asarray(packed.lengths)[:real], np.asarray(padded.lengths)[:real])
    np.testing.assert_allclose(np.asarray(packed.log_probs)[:real], np.asarray(padded.log_probs)[:real], atol=1e-5)
    with pytest.raises(ValueError, match="prefill_pack=20 slots cannot hold the prompts' 21 tokens"):
        sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), dataclasses.replace(scfg, prefill_pack=20))


class _IdTokenizer:
    """Text = space-separated token ids."""
    pad_token_id, eos_token_id, chat_template = 0, 1, None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __len__(self):
        return self.vocab_size

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(t) for t in text.split()]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_text_generator_packs_ragged_batches_on_one_device(hf_checkpoints, monkeypatch):
    """TextGenerator packs the prefill of a batch whose real tokens fill at most 80% of its padded slots
    (bucketed), pads it otherwise, and never packs under a mesh that splits rows."""
    from repirl_jax.generation import completions, rollout
    params, cfg = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"])
    seen = []
    real_generate = rollout.generate
    monkeypatch.setattr(rollout, "generate", lambda p, c, t, m, s, *a, **k: seen.append((t.shape[1], s.prefill_pack))
                        or real_generate(p, c, t, m, s, *a, **k))

    Tok = lambda: _IdTokenizer(cfg.vocab_size)  # noqa: E731
    text = lambda n: " ".join(str(5 + i) for i in range(n))  # noqa: E731
    scfg = SamplingConfig(max_new_tokens=3, greedy=True)
    gen = completions.TextGenerator(params, cfg, Tok(), 64, 4)
    gen.generate([text(n) for n in (30, 2, 3, 4, 30, 30, 30, 20)], scfg, jax.random.key(0))
    # 39 tokens in 4 x 32 slots -> one row of 48; 110 tokens in 4 x 32 -> 128 > 80%: padded
    assert seen == [(32, 48), (32, 0)]
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded, _ = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"], mesh=mesh)
    completions.TextGenerator(sharded, cfg, Tok(), 64, 4, mesh=mesh).generate([text(30), text(2)], scfg,
                                                                           jax.random.key(0))
    assert seen[-1] == (32, 0)


def test_text_generator_keeps_one_weight_major_copy(hf_checkpoints):
    """On one device with the weight-major decode step, TextGenerator makes the weights' decode copy once and
    passes it to every batch; its samples equal those of a generator that copies per call (as training does)."""
    from repirl_jax.generation import completions
    params, cfg = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"])
    prompts = [" ".join(str(7 + 3 * i + j) for j in range(n)) for i, n in enumerate((9, 2, 5, 12, 3))]
    scfg = SamplingConfig(max_new_tokens=6, temperature=1.0, num_samples=2, decode_impl="weight_major")
    kept = completions.TextGenerator(params, cfg, _IdTokenizer(cfg.vocab_size), 16, 2)
    got = kept.generate(prompts, scfg, jax.random.key(3))
    copy = kept._decode_weights
    assert copy is not None and kept.generate(prompts[:1], scfg, jax.random.key(3)) and kept._decode_weights is copy
    per_call = completions.TextGenerator(params, cfg, _IdTokenizer(cfg.vocab_size), 16, 2)
    per_call.keep_decode_weights = False
    want = per_call.generate(prompts, scfg, jax.random.key(3))
    assert per_call._decode_weights is None
    assert [[c.token_ids for c in row] for row in got] == [[c.token_ids for c in row] for row in want]
    flat = lambda out: [x for row in out for c in row for x in c.log_probs]  # noqa: E731
    np.testing.assert_allclose(flat(got), flat(want), atol=1e-6)
