"""The figures of tools/device_check.sh: sampler throughput, PRM and policy steps, attention kernels on one device.

    python tools/device_check.py --out=FILE.json [--dry]

Random weights at the architecture of Qwen2.5-0.5B and -3B (bfloat16 compute; steps with float32 weights
and AdamW as in the paper configs, remat="full"), no network, no checkpoint. Each figure is the best of
--repeats after a warm-up call (compilation time reported separately). --dry: the same steps at tiny
shapes (tiny-qwen2, short rows) on whatever backend is there (the CPU in the test suite).

Figures (one JSON object): backend, device, jax version; per model: sampler tokens/s at batch x (prompt +
new tokens); PRM step and policy step seconds at one row of the paper's length (1,535 + 3,000 tokens);
forward seconds with attn_impl=blocked and (on a GPU) cudnn, and their largest logit difference; and
`vs_transformers` at the real checkpoints' shapes (Qwen2.5-Coder-0.5B and -1.5B-Instruct: untied 151,936-token
heads; random weights, built by transformers on the machine, which has no network): our sampler against
transformers' `generate` on the same device, bf16, the same batch of --hf_batch rows x (--hf_prompt + --hf_new)
tokens, greedy, EOS off; tokens/s of each and `ratio_vs_hf`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("out", "device_check.json", "Where the JSON of figures goes.")
flags.DEFINE_bool("dry", False, "Tiny shapes (runs anywhere, fast): checks that every step still runs.")
flags.DEFINE_string("models", "qwen2.5-0.5b,qwen2.5-3b", "Presets for the sampler bench.")
flags.DEFINE_string("step_models", "qwen2.5-0.5b,qwen2.5-3b", "Presets for the PRM / policy steps.")
flags.DEFINE_integer("sampler_batch", 64, "Sampler rows.")
flags.DEFINE_integer("prompt_len", 512, "Sampler prompt tokens.")
flags.DEFINE_integer("new_tokens", 256, "Sampler new tokens per row.")
flags.DEFINE_integer("prompt_tokens", 1535, "Step row: prompt tokens (the paper's).")
flags.DEFINE_integer("response_tokens", 3000, "Step row: response tokens (the paper's).")
flags.DEFINE_integer("repeats", 2, "Timed calls per figure (best reported).")
flags.DEFINE_string("hf_models", "qwen2.5-0.5b,qwen2.5-1.5b", "Presets (with an untied head, as the Coder "
                    "checkpoints) for the comparison with transformers on the same device.")
flags.DEFINE_integer("hf_batch", 16, "Rows of the transformers comparison.")
flags.DEFINE_integer("hf_prompt", 160, "Prompt tokens of the transformers comparison (GSM8K's ~150).")
flags.DEFINE_integer("hf_new", 256, "New tokens of the transformers comparison.")
FLAGS = flags.FLAGS


def _timed(fn, repeats):
    """(seconds of the first call (compile + run), best seconds of `repeats` further calls)."""
    import jax
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return first, best


def _cfg(name, dry, **kw):
    from repirl_jax.models.config import preset
    if dry:  # float32: the CPU backend has no bf16 x bf16 -> f32 dot in every op the sampler uses
        kw = dict(kw, param_dtype="float32")
        return preset("tiny-qwen2", dtype="float32", num_hidden_layers=1, attn_block=8, **kw)
    return preset(name, dtype="bfloat16", attn_block=1024, **kw)


def sampler_figures(name, dry, repeats):
    import jax
    import numpy as np

    from repirl_jax.generation import sampling
    from repirl_jax.models import qwen
    cfg = _cfg(name, dry, param_dtype="bfloat16")
    b, p, n = (4, 8, 8) if dry else (FLAGS.sampler_batch, FLAGS.prompt_len, FLAGS.new_tokens)
    params = qwen.init_params(cfg, jax.random.key(0))
    tokens = np.random.RandomState(0).randint(1, cfg.vocab_size, size=(b, p)).astype(np.int32)
    mask = np.ones((b, p), np.int32)
    scfg = sampling.SamplingConfig(max_new_tokens=n, greedy=True, pad_token_id=0)  # no stop token: all n made
    first, best = _timed(lambda: sampling.generate(params, cfg, tokens, mask, scfg).tokens, repeats)
    return dict(rows=b, prompt=p, new_tokens=n, seconds=best, first_call_seconds=first,
                tokens_per_s=b * n / best)


def step_figures(name, dry, repeats, both_kernels=True):
    """One policy step (token-mean NLL, AdamW) and one PRM step (scalar head, a logistic loss on the token
    rewards' sum, AdamW) on one row, float32 weights, bf16 compute, remat=full."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from repirl_jax.models import heads, logprobs, qwen
    cfg = _cfg(name, dry, param_dtype="float32", remat="full")
    p, r = (8, 8) if dry else (FLAGS.prompt_tokens, FLAGS.response_tokens)
    rng = np.random.RandomState(0)
    prompt = jnp.asarray(rng.randint(1, cfg.vocab_size, size=(1, p)), jnp.int32)
    resp = jnp.asarray(rng.randint(1, cfg.vocab_size, size=(1, r)), jnp.int32)
    pmask, rmask = jnp.ones((1, p), jnp.int32), jnp.ones((1, r), jnp.float32)
    opt = optax.adamw(1e-6)
    out = {"row_tokens": p + r}
    kernels = ("blocked", "cudnn") if jax.default_backend() == "gpu" and both_kernels else ("auto",)
    if jax.default_backend() != "gpu":
        kernels = ("blocked",)
    for attn in kernels:
        c = cfg.replace(attn_impl=attn)

        def policy_loss(params):
            lp, _ = logprobs.response_logprobs(params, c, prompt, pmask, resp, rmask, chunk=512, with_entropy=False)
            return -(lp * rmask).sum() / rmask.sum()

        def prm_loss(prm):
            rew = logprobs.prm_token_rewards(prm, c, prompt, pmask, resp, rmask)
            return jax.nn.softplus(-rew.sum())

        def make_step(loss):
            @jax.jit
            def step(params, state):
                value, g = jax.value_and_grad(loss)(params)
                u, state = opt.update(g, state, params)
                return optax.apply_updates(params, u), state, value
            return step

        params = qwen.init_params(cfg, jax.random.key(1))
        for kind, loss, tree in (("policy_step", policy_loss, params),
                                 ("prm_step", prm_loss, {"trunk": params,
                                                         "head": heads.init_scalar_head(cfg, jax.random.key(2))})):
            first, best = _timed_step(make_step(loss), tree, opt.init(tree), repeats)
            out[f"{kind}[{attn}]"] = dict(seconds=best, first_call_seconds=first)
        del params
    return out


def _timed_step(step, tree, state, repeats):
    """`_timed` of repeated updates `tree, state, loss = step(tree, state)`. The state starts committed to the
    device (an alias, not a copy), as the step's outputs are: uncommitted inputs would make the first timed call
    compile the step a second time."""
    import jax
    box = jax.device_put({"t": tree, "s": state}, jax.local_devices()[0])

    def once():
        box["t"], box["s"], value = step(box["t"], box["s"])
        return value
    return _timed(once, repeats)


def attention_figures(name, dry, repeats):
    """Forward logits at the step row length with each attention kernel; their largest difference."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from repirl_jax.models import qwen
    cfg = _cfg(name, dry, param_dtype="bfloat16")
    t = 16 if dry else FLAGS.prompt_tokens + FLAGS.response_tokens
    params = qwen.init_params(cfg, jax.random.key(0))
    tokens = jnp.asarray(np.random.RandomState(1).randint(1, cfg.vocab_size, size=(1, t)), jnp.int32)
    mask = jnp.ones((1, t), jnp.int32).at[0, : t // 8].set(0)  # some left padding
    out, logits = {}, {}
    for attn in ("blocked", "cudnn") if jax.default_backend() == "gpu" else ("blocked",):
        c = cfg.replace(attn_impl=attn)
        fn = jax.jit(lambda p, x, c=c: qwen.lm_logits(p, c, qwen.forward(p, c, x, qwen.positions_from_mask(mask),
                                                                            mask)[0]))
        first, best = _timed(lambda: fn(params, tokens), repeats)
        logits[attn] = np.asarray(fn(params, tokens), np.float32)[0, t // 8:]
        out[f"forward[{attn}]"] = dict(seconds=best, first_call_seconds=first)
    if "cudnn" in logits:
        out["max_abs_logit_diff_cudnn_vs_blocked"] = float(np.abs(logits["cudnn"] - logits["blocked"]).max())
        out["max_abs_logit"] = float(np.abs(logits["blocked"]).max())
    return out


def vs_transformers(name, dry, repeats):
    """Our sampler and transformers' generate on one device, same random weights at `name`'s shape with an
    untied head (bf16; float32 when --dry), same prompts, greedy, every row making --hf_new tokens."""
    import tempfile

    import jax
    import numpy as np
    import torch
    import transformers

    from repirl_jax.checkpoints import hf
    from repirl_jax.generation import sampling
    cfg = _cfg(name, dry, param_dtype="bfloat16" if not dry else "float32", tie_word_embeddings=False)
    b, p, n = (2, 8, 8) if dry else (FLAGS.hf_batch, FLAGS.hf_prompt, FLAGS.hf_new)
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    dtype = torch.float32 if dry else torch.bfloat16
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg.to_hf_dict())).to(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        params, _ = hf.load_hf_params(tmp)
    model = model.to(device).eval()
    tokens = np.random.RandomState(0).randint(1, cfg.vocab_size, size=(b, p)).astype(np.int32)
    mask = np.ones((b, p), np.int32)
    scfg = sampling.SamplingConfig(max_new_tokens=n, greedy=True, pad_token_id=0)
    _, ours = _timed(lambda: sampling.generate(params, cfg, tokens, mask, scfg).tokens, repeats)
    ids = torch.tensor(tokens, dtype=torch.long, device=device)

    def theirs():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    theirs()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        theirs()
        best = min(best, time.perf_counter() - t)
    return dict(rows=b, prompt=p, new_tokens=n, torch_device=device, ours_tokens_per_s=b * n / ours,
                hf_tokens_per_s=b * n / best, ratio_vs_hf=best / ours)


def main(argv):
    del argv
    import jax
    dry = FLAGS.dry
    repeats = 1 if dry else FLAGS.repeats
    figures = {"jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0]),
               "dry": dry, "models": {}, "errors": {}}
    models = FLAGS.models.split(",")
    step_models = FLAGS.step_models.split(",")
    if dry:
        models, step_models = models[:1], step_models[:1]
    # Both attention kernels for the first step model only (8 minutes in all); "auto" for the others.
    parts = [("sampler", name, sampler_figures) for name in models]
    parts += [("steps", name, lambda n, d, r, first=(i == 0): step_figures(n, d, r, both_kernels=first))
              for i, name in enumerate(step_models)]
    parts += [("attention", step_models[0], attention_figures)]
    hf_models = FLAGS.hf_models.split(",")[:1] if dry else FLAGS.hf_models.split(",")
    parts += [("vs_transformers", name, vs_transformers) for name in hf_models]
    for part, name, fn in parts:
        t = time.perf_counter()
        try:
            figures["models"].setdefault(name, {})[part] = fn(name, dry, repeats)
        except Exception as e:  # noqa: BLE001 - one failed part must not lose the others' figures
            figures["errors"][f"{name}/{part}"] = f"{type(e).__name__}: {e}"[:2000]
            traceback.print_exc()
        print(f"{name} {part}: {time.perf_counter() - t:.0f} s "
              f"{json.dumps(figures['models'].get(name, {}).get(part))}", flush=True)
        with open(FLAGS.out, "w") as f:  # after every part: a killed run keeps what it measured
            json.dump(figures, f, indent=1)
    print(f"wrote {FLAGS.out}; errors: {len(figures['errors'])}")
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
