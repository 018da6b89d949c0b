"""Sampler throughput: our jitted KV-cache sampler against transformers `generate`, same weights, one run.

    python tools/bench_sampler.py --size=S [--dtype=float32|bfloat16] [--peer=hf] [--profile]
    python tools/bench_sampler.py --lengths=geometric    # continuous batching vs the static sampler
    python tools/bench_sampler.py --analyze              # bytes per decode step at the paper shape

Batch 16, prompt 64 tokens, 128 new tokens, greedy, EOS disabled (every row makes every token), KV cache on
both sides, torch on 2 threads. Each side is timed after a warm-up (best of --repeats). Prints tokens/s of
each, our per-step time as a multiple of this machine's roofline for the shape (max of weight bytes over
measured memory bandwidth and FLOPs over measured matmul peak), and as its last line
`ratio_vs_hf=<our tokens/s / transformers tokens/s>`. `--profile` adds a breakdown of one decode step into
isolated jitted pieces (weight matmuls, LM head, cache write + attention, layout copies in the HLO), for the
model's decode kernel and the weight-major one the sampler uses on the CPU (`models/decode.py`).

`--lengths=geometric`: --prompts prompts, each with a response budget drawn (seeded) from a geometric law
of mean new_tokens/4, truncated at new_tokens, the same budgets for both sides; greedy, EOS off, so every
row makes exactly its budget. new_tokens is 512 by default here: responses dominate prompts, as in the
paper's 3,000-token rollouts; at 128 the prompts' prefill (the same cost on both sides) is a fifth of the
static sampler's time (measured: ratio 1.86 against 2.37 for the decode steps alone). The static sampler decodes batches of --batch prompts (each batch runs until
its longest row ends); `continuous.generate` decodes the whole queue on --batch rows. Prints useful
(budgeted) tokens/s of each; last line `ratio_vs_static=`.

`--hf_dir=DIR`: a real checkpoint's shape and weights (float32 on both sides): --batch prompts of a benchmark
(--benchmark, default gsm8k) through the checkpoint's chat template, left-padded (ours: to the batch's prompt
bucket, as evaluate does; transformers: to the longest prompt), greedy, EOS off so that both sides make
exactly --new_tokens tokens per row (default 256). Roofline per decode step: every weight read once (the
untied LM head included) at the measured bandwidth, or the step's FLOPs at the measured matmul rate.

`--analyze`: compiles (does not run) one decode step at Qwen2.5-3B's architecture, float32, 64 rows, P =
1535 prompt slots + 3000 new = 4,535 slots, 2,500 live slots per row on average, and reads the bytes it
moves from XLA's cost analysis; last line `bytes_vs_ideal=` (ideal: every weight once + the live KV).
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from bench_common import SHAPES, best_time, best_times_interleaved, cpu_model, measure_machine  # noqa: E402

flags.DEFINE_enum("size", "S", ["XS", "S"], "XS: hidden 256, 4 layers; S: ~100M parameters.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Weights and compute dtype on both sides.")
flags.DEFINE_enum("peer", "hf", ["hf", "tunix"], "What to compare with (tunix: not implemented yet).")
flags.DEFINE_integer("batch", 16, "Rows.")
flags.DEFINE_integer("prompt_len", 64, "Prompt tokens per row.")
flags.DEFINE_integer("new_tokens", None, "Generated tokens per row (default 128; 512 with --lengths=geometric).")
flags.DEFINE_integer("repeats", 3, "Timed runs per side (best is reported).")
flags.DEFINE_enum("lengths", "fixed", ["fixed", "geometric"], "fixed: vs transformers; geometric: see above.")
flags.DEFINE_integer("prompts", 48, "Prompts in the queue (--lengths=geometric).")
flags.DEFINE_bool("analyze", False, "Bytes per decode step at the paper shape (compile only).")
flags.DEFINE_enum("decode_impl", "auto", ["auto", "model", "weight_major"], "Our decode kernel "
                  "(SamplingConfig.decode_impl; auto = weight_major on the CPU).")
flags.DEFINE_bool("profile", False, "Per-op breakdown of one decode step (--lengths=fixed).")
flags.DEFINE_string("hf_dir", None, "A real checkpoint (HF directory) instead of --size's random model.")
flags.DEFINE_string("benchmark", "gsm8k", "--hf_dir: the benchmark whose first --batch prompts are used.")
FLAGS = flags.FLAGS

def real_prompts(b: int):
    """(ours: tokens, mask at the batch's prompt bucket; transformers: left-padded to the longest) of the first b
    prompts of --benchmark through --hf_dir's chat template."""
    import numpy as np
    import transformers

    from repirl_jax.data import benchmarks
    from repirl_jax.generation import sampling
    tok = transformers.AutoTokenizer.from_pretrained(FLAGS.hf_dir)
    ids = [tok(benchmarks.build_prompt(r, tok), add_special_tokens=False)["input_ids"]
           for r in benchmarks.load(FLAGS.benchmark, limit=b)]
    pad = tok.pad_token_id or 0
    tokens, mask = sampling.pad_prompts(ids, 4096, b, pad, fit=True)
    width = max(map(len, ids))
    hf_tokens = np.asarray([[pad] * (width - len(x)) + x for x in ids], np.int32)
    hf_mask = np.asarray([[0] * (width - len(x)) + [1] * len(x) for x in ids], np.int32)
    return tokens, mask, hf_tokens, hf_mask


def decode_step_fn(cfg, rows):
    """One decode step as the sampler runs it: forward of one token per row over the cache, LM head, argmax."""
    import jax.numpy as jnp

    from repirl_jax.models import qwen

    def step(params, head, cache, token, positions):
        hidden, cache = qwen.forward(params, cfg, token[:, None], positions[:, None],
                                     jnp.ones((rows, 1), jnp.int32), cache)
        logits = qwen.lm_logits(params, cfg, hidden, head_ev=head)[:, 0]
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache
    return step


def analyze():
    """Bytes one compiled decode step moves at the paper shape, against weights + live KV."""
    import jax
    import jax.numpy as jnp

    from repirl_jax.generation import sampling
    from repirl_jax.models import qwen
    from repirl_jax.models.config import preset

    cfg = preset("qwen2.5-3b", dtype="float32", param_dtype="float32")
    rows, p, new, live = 64, 1535, 3000, 2500
    f32 = 4
    abstract = qwen.abstract_params(cfg)
    head = jax.ShapeDtypeStruct((cfg.hidden_size, cfg.vocab_size), jnp.float32)
    vec = jax.ShapeDtypeStruct((rows,), jnp.int32)
    per_slot = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * f32  # k and v, all layers
    weight_bytes = sum(x.size for x in jax.tree.leaves(abstract)) * f32  # the head copy stands in for the
    # tied embedding table, of which a step reads only `rows` rows
    ends = sampling.segment_ends(new, sampling.SamplingConfig(max_new_tokens=new).slot_bucket)
    bound = p + next(e for e in ends if p + e >= live)

    def step_bytes(slots):
        cache = jax.eval_shape(lambda: qwen.init_cache(cfg, rows, slots)._replace(index=jnp.zeros((), jnp.int32)))
        step = jax.jit(decode_step_fn(cfg, rows), donate_argnums=2)  # the cache is updated in place
        compiled = step.lower(abstract, head, cache, vec, vec).compile()
        return compiled.cost_analysis()["bytes accessed"]

    # XLA counts a gather as reading its whole operand: the embedding lookup would count the full
    # [vocab, embed] table. Measure that op alone and replace its count by the rows it really reads.
    table = jax.ShapeDtypeStruct((cfg.vocab_size, cfg.hidden_size), jnp.float32)
    gather = jax.jit(lambda t, i: jnp.take(t, i, axis=0)).lower(table, vec).compile().cost_analysis()["bytes accessed"]
    gather_fix = gather - 2 * rows * cfg.hidden_size * f32 - rows * 4

    ideal = weight_bytes + rows * live * per_slot
    print(f"paper shape: Qwen2.5-3B architecture, float32, {rows} rows, {p}+{new}={p + new} slots, {live} live "
          f"slots per row on average")
    print("accounting: 'bytes accessed' of XLA's cost analysis of the compiled step (every HLO op's operand and "
          "output bytes; the KV write is an in-place dynamic-update-slice on the donated cache, which XLA counts "
          f"as the update's bytes read and written, not a copy of the cache), minus {gather_fix / 1e9:.2f} GB of "
          "the embedding gather's count of the whole table (compiled alone) plus the rows it reads")
    print(f"ideal: weights {weight_bytes / 1e9:.2f} GB (each read once) + live KV {rows * live * per_slot / 1e9:.2f} GB "
          f"({rows} x {live} slots x {per_slot} B) = {ideal / 1e9:.2f} GB")
    full = step_bytes(p + new) - gather_fix
    print(f"step reading every slot ({p + new}; as before length buckets; continuous batching still does): "
          f"{full / 1e9:.2f} GB = {full / ideal:.2f}x ideal")
    bucketed = step_bytes(bound) - gather_fix
    print(f"length-bucketed step (static sampler, slot_bucket={ends[0]}): the segment holding {live} live slots "
          f"reads {bound} slots: {bucketed / 1e9:.2f} GB")
    print(f"bytes_vs_ideal={bucketed / ideal:.2f}")
    return 0


def geometric(params, cfg, b, p, n):
    """Useful tokens/s of the static sampler and of continuous batching on geometric response lengths."""
    import jax.numpy as jnp
    import numpy as np

    from repirl_jax.generation import continuous, sampling

    q = FLAGS.prompts
    rng = np.random.RandomState(0)
    budgets = np.minimum(rng.geometric(4.0 / n, size=q), n).astype(np.int32)
    tokens = jnp.asarray(rng.randint(0, cfg.vocab_size, size=(q, p)).astype(np.int32))
    mask = jnp.ones((q, p), jnp.int32)
    scfg = sampling.SamplingConfig(max_new_tokens=n, greedy=True, stop_token_ids=())
    jb = jnp.asarray(budgets)

    def static():
        outs = [sampling.generate(params, cfg, tokens[i:i + b], mask[i:i + b], scfg, max_new_rows=jb[i:i + b])
                for i in range(0, q, b)]
        return np.concatenate([np.asarray(o.tokens) for o in outs])

    def cont():
        return np.asarray(continuous.generate(params, cfg, tokens, mask, scfg, rows=b, max_new_rows=jb).tokens)

    t_static, t_cont = best_times_interleaved([static, cont], FLAGS.repeats)
    same = bool((static() == cont()).all())
    useful = int(budgets.sum())
    longest = [int(budgets[i:i + b].max()) for i in range(0, q, b)]
    print(f"{q} prompts of {p} tokens, {b} rows, response budgets geometric(mean {n / 4:.0f}) truncated at {n}: "
          f"mean {budgets.mean():.1f}, {useful} useful tokens; static batches' longest rows {longest}")
    print(f"static sampler: {useful / t_static:.0f} useful tok/s ({t_static:.2f} s)")
    print(f"continuous batching: {useful / t_cont:.0f} useful tok/s ({t_cont:.2f} s)")
    print(f"same tokens on both sides: {same}")
    print(f"ratio_vs_static={t_static / t_cont:.2f}")
    return 0


def profile(params, cfg, b, p, n):
    """Wall time of isolated jitted pieces of one decode step at this shape (best of 5 each), for the model's
    kernel (`qwen.forward`, activations [B, E] times weights [in, out]: what the sampler ran before
    `models/decode.py`) and the weight-major kernel (weights [out, in] times activations [E, B])."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from repirl_jax.models import decode, qwen

    slots = p + n
    head = jax.block_until_ready(qwen.lm_head_weight(params, cfg) + 0)
    dw = jax.block_until_ready(jax.jit(lambda p: decode.decode_weights(p, cfg))(params))
    cache = qwen.init_cache(cfg, b, slots)._replace(index=jnp.asarray(p + n // 2, jnp.int32))
    cache = cache._replace(valid=jnp.arange(slots)[None, :].repeat(b, 0) < p + n // 2)
    tok = jnp.zeros((b,), jnp.int32)
    pos = jnp.full((b,), p + n // 2, jnp.int32)
    ones = jnp.ones((b,), jnp.int32)
    x = jnp.ones((b, cfg.hidden_size), jnp.float32)
    layers = [params[f"layer_{i}"] for i in range(cfg.num_hidden_layers)]
    hd = cfg.num_attention_heads * cfg.head_dim

    def matmuls_model(layers, x):  # every weight matrix once, on [b, E] activations
        y = x
        for lp in layers:
            a, m = lp["attn"], lp["mlp"]
            qkv = jnp.concatenate([jnp.einsum("be,ehd->bhd", y, a[k]).reshape(b, -1) for k in
                                   ("q_kernel", "k_kernel", "v_kernel")], -1)
            y = y + jnp.einsum("bhd,hde->be", qkv[:, :hd].reshape(b, cfg.num_attention_heads, cfg.head_dim),
                               a["o_kernel"])
            y = y + (jax.nn.silu(y @ m["gate_kernel"]) * (y @ m["up_kernel"])) @ m["down_kernel"]
        return y

    def matmuls_weight_major(dw, x):  # the same products as models/decode.py makes them
        y = x.T
        for w in dw["layers"]:
            qkv = decode._dot(w["qkv"], y)
            y = y + decode._dot(w["o"], qkv[:hd])
            gu = decode._dot(w["gate_up"], y)
            y = y + decode._dot(w["down"], jax.nn.silu(gu[:gu.shape[0] // 2]) * gu[gu.shape[0] // 2:])
        return y

    def attention_model(ck, cv, index, valid):  # cache write + masked softmax attention, every layer
        q = jnp.ones((b, 1, cfg.num_key_value_heads, cfg.num_groups, cfg.head_dim), jnp.float32)
        kv = jnp.ones((b, 1, cfg.num_key_value_heads, cfg.head_dim), jnp.float32)
        return [qwen.cached_attention(q, kv, kv, (k, v), index, valid[:, None, :], jnp.float32) for k, v in zip(ck, cv)]

    def attention_weight_major(ck, cv, index, valid):
        q = jnp.ones((cfg.num_key_value_heads, cfg.num_groups, cfg.head_dim, b), jnp.float32)
        kv = jnp.ones((cfg.num_key_value_heads, cfg.head_dim, b), jnp.float32)
        return [decode._attend(q, kv, kv, k, v, index, valid, jnp.float32) for k, v in zip(ck, cv)]

    def model_step(params, head, cache, token, positions):
        return decode_step_fn(cfg, b)(params, head, cache, token, positions)

    def weight_major_step(dw, cache, token, positions):
        logits, cache = decode.decode_step(dw, cfg, token, positions, ones, cache)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache

    steps = {"model": jax.jit(model_step), "weight_major": jax.jit(weight_major_step)}
    step_args = {"model": (params, head, cache, tok, pos), "weight_major": (dw, cache, tok, pos)}
    pieces = {
        "whole decode step": {k: (steps[k], step_args[k]) for k in steps},
        "weight matmuls (q,k,v,o,gate,up,down)": {"model": (jax.jit(matmuls_model), (layers, x)),
                                                  "weight_major": (jax.jit(matmuls_weight_major), (dw, x))},
        "LM head": {"model": (jax.jit(lambda h, x: x @ h), (head, x)),
                    "weight_major": (jax.jit(decode.head_logits), (dw, x))},
        "cache write + attention, all layers": {
            "model": (jax.jit(attention_model), (cache.k, cache.v, cache.index, cache.valid)),
            "weight_major": (jax.jit(attention_weight_major), (cache.k, cache.v, cache.index, cache.valid))},
    }
    cache_mb = sum(x.nbytes for x in cache.k + cache.v) / 1e6
    print(f"decode step breakdown, {b} rows, {slots} slots (isolated jitted pieces, best of 5 each), "
          f"model kernel -> weight-major kernel (SamplingConfig.decode_impl); the pieces that write the cache "
          f"also copy it ({cache_mb:.1f} MB; the sampler's loop updates it in place):")
    for name, sides in pieces.items():
        ts = {k: best_time(lambda f=f, a=a: jax.block_until_ready(f(*a)), 5) * 1e3 for k, (f, a) in sides.items()}
        print(f"  {name}: " + " -> ".join(f"{t:.2f} ms" for t in ts.values()))
    for kind, step in steps.items():
        hlo = step.lower(*step_args[kind]).compile().as_text()
        moved = {"copy": 0, "transpose": 0}
        for line in hlo.splitlines():
            for op in moved:
                if f" {op}(" in line and "=" in line:
                    shape = line.split("=")[1].split("{")[0].split("[")
                    if len(shape) > 1 and shape[0].strip() in ("f32", "bf16"):
                        dims = [int(d) for d in shape[1].rstrip("]").split(",") if d.strip()]
                        moved[op] += int(np.prod(dims)) * (4 if shape[0].strip() == "f32" else 2)
        print(f"  layout ops in the compiled step ({kind}): copies {moved['copy'] / 1e6:.1f} MB, transposes "
              f"{moved['transpose'] / 1e6:.1f} MB written per step")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.analyze:
        return analyze()
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from repirl_jax.checkpoints import hf
    from repirl_jax.generation import sampling

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[FLAGS.dtype]
    b = FLAGS.batch
    if FLAGS.hf_dir:
        model = transformers.AutoModelForCausalLM.from_pretrained(FLAGS.hf_dir, dtype=torch_dtype).eval()
        params, cfg = hf.load_hf_params(FLAGS.hf_dir, dtype=FLAGS.dtype)
        n = FLAGS.new_tokens or 256
        tokens, mask, hf_tokens, hf_mask = real_prompts(b)
        p = tokens.shape[1]
        shape = f"{os.path.basename(os.path.normpath(FLAGS.hf_dir))} ({FLAGS.benchmark} prompts, chat template)"
    else:
        config = transformers.Qwen2Config(vocab_size=32000, tie_word_embeddings=True, max_position_embeddings=1024,
                                          **SHAPES[FLAGS.size])
        model = transformers.Qwen2ForCausalLM(config).to(torch_dtype).eval()
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            params, cfg = hf.load_hf_params(tmp)
        p = FLAGS.prompt_len
        n = FLAGS.new_tokens or (512 if FLAGS.lengths == "geometric" else 128)
        tokens = np.random.RandomState(0).randint(0, 32000, size=(b, p)).astype(np.int32)
        mask = np.ones((b, p), np.int32)
        hf_tokens, hf_mask, shape = tokens, mask, f"shape {FLAGS.size}"
    cfg = cfg.replace(dtype=FLAGS.dtype)
    scfg = sampling.SamplingConfig(max_new_tokens=n, greedy=True, stop_token_ids=(), decode_impl=FLAGS.decode_impl)
    jt, jm = jnp.asarray(tokens), jnp.asarray(mask)
    if FLAGS.lengths == "geometric":
        return geometric(params, cfg, b, p, n)

    def ours():
        return sampling.generate(params, cfg, jt, jm, scfg).tokens.block_until_ready()

    ids, att = torch.tensor(hf_tokens, dtype=torch.long), torch.tensor(hf_mask)
    hp = hf_tokens.shape[1]

    def theirs():
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=att, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True)

    if FLAGS.peer == "tunix":
        print("peer=tunix: the comparison with google-tunix's sampler is not implemented yet", file=sys.stderr)
        return 2

    t_ours, t_hf = best_times_interleaved([ours, theirs], FLAGS.repeats)  # alternating: shared machine
    same = float((np.asarray(ours()) == theirs()[:, hp:].numpy()).mean()) if FLAGS.dtype == "float32" else None
    bandwidth, peak = measure_machine()
    n_params = cfg.num_params()
    weight_bytes = n_params * (4 if FLAGS.dtype == "float32" else 2)
    flops = 2 * n_params * b  # per decode step (attention over the prompt + new slots is small beside the weights)
    roofline = max(weight_bytes / bandwidth, flops / peak)
    step_ours = t_ours / n
    tok_ours, tok_hf = b * n / t_ours, b * n / t_hf
    print(f"cpu: {cpu_model()}")
    print(f"{shape}: {n_params / 1e6:.1f}M parameters, {FLAGS.dtype}, batch {b}, prompt {p} slots (transformers "
          f"{hp}), new {n}")
    print(f"machine: memory bandwidth {bandwidth / 1e9:.1f} GB/s, matmul peak {peak / 1e9:.0f} GFLOP/s; "
          f"roofline per decode step {roofline * 1e3:.2f} ms")
    print(f"ours: {tok_ours:.0f} tok/s ({step_ours * 1e3:.2f} ms/step, {step_ours / roofline:.1f}x roofline)")
    print(f"transformers: {tok_hf:.0f} tok/s ({t_hf / n * 1e3:.2f} ms/step, {t_hf / n / roofline:.1f}x roofline)")
    if same is not None:
        print(f"greedy tokens equal to transformers': {100 * same:.1f}%")
    if FLAGS.profile:
        profile(params, cfg, b, p, n)
    print(f"ratio_vs_hf={tok_ours / tok_hf:.2f}")
    return 0


if __name__ == "__main__":
    app.run(main)
