"""Sampler throughput: our jitted KV-cache sampler against transformers `generate`, same weights, one run.

    python tools/bench_sampler.py --size=S [--dtype=float32|bfloat16] [--peer=hf]

Batch 16, prompt 64 tokens, 128 new tokens, greedy, EOS disabled (every row makes every token), KV cache on
both sides, torch on 2 threads. Each side is timed after a warm-up (best of --repeats). Prints tokens/s of
each, our per-step time as a multiple of this machine's roofline for the shape (max of weight bytes over
measured memory bandwidth and FLOPs over measured matmul peak), and as its last line
`ratio_vs_hf=<our tokens/s / transformers tokens/s>`.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from bench_common import SHAPES, best_time  # noqa: E402

flags.DEFINE_enum("size", "S", ["XS", "S"], "XS: hidden 256, 4 layers; S: ~100M parameters.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Weights and compute dtype on both sides.")
flags.DEFINE_enum("peer", "hf", ["hf", "tunix"], "What to compare with (tunix: not implemented yet).")
flags.DEFINE_integer("batch", 16, "Rows.")
flags.DEFINE_integer("prompt_len", 64, "Prompt tokens per row.")
flags.DEFINE_integer("new_tokens", 128, "Generated tokens per row.")
flags.DEFINE_integer("repeats", 3, "Timed runs per side (best is reported).")
FLAGS = flags.FLAGS

def measure_machine():
    """(memory bandwidth bytes/s, matmul peak FLOP/s) of this machine, measured with XLA itself."""
    import jax
    import jax.numpy as jnp
    x = jnp.ones((64 * 2**20,), jnp.float32)  # 256 MiB, far beyond the caches
    total = jax.jit(jnp.sum)
    t = best_time(lambda: total(x).block_until_ready(), 5)
    bandwidth = x.nbytes / t
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    t = best_time(lambda: mm(a).block_until_ready(), 5)
    return bandwidth, 2 * 2048**3 / t


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers
    from repirl_jax import hf, sampling

    torch.set_num_threads(2)
    torch.manual_seed(0)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[FLAGS.dtype]
    config = transformers.Qwen2Config(vocab_size=32000, tie_word_embeddings=True, max_position_embeddings=1024,
                                      **SHAPES[FLAGS.size])
    model = transformers.Qwen2ForCausalLM(config).to(torch_dtype).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        params, cfg = hf.load_hf_params(tmp)
    cfg = cfg.replace(dtype=FLAGS.dtype)
    b, p, n = FLAGS.batch, FLAGS.prompt_len, FLAGS.new_tokens
    tokens = np.random.RandomState(0).randint(0, 32000, size=(b, p)).astype(np.int32)
    mask = np.ones((b, p), np.int32)
    scfg = sampling.SamplingConfig(max_new_tokens=n, greedy=True, stop_token_ids=())
    jt, jm = jnp.asarray(tokens), jnp.asarray(mask)

    def ours():
        return sampling.generate(params, cfg, jt, jm, scfg).tokens.block_until_ready()

    ids, att = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask)

    def theirs():
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=att, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True)

    if FLAGS.peer == "tunix":
        print("peer=tunix: the comparison with google-tunix's sampler is not implemented yet", file=sys.stderr)
        return 2

    t_ours = best_time(ours, FLAGS.repeats)
    t_hf = best_time(theirs, FLAGS.repeats)
    same = bool((np.asarray(ours()) == theirs()[:, p:].numpy()).mean() > 0.9) if FLAGS.dtype == "float32" else None
    bandwidth, peak = measure_machine()
    n_params = cfg.num_params()
    weight_bytes = n_params * (4 if FLAGS.dtype == "float32" else 2)
    flops = 2 * n_params * b  # per decode step (attention over <= 192 slots is small beside the weights)
    roofline = max(weight_bytes / bandwidth, flops / peak)
    step_ours = t_ours / n
    tok_ours, tok_hf = b * n / t_ours, b * n / t_hf
    print(f"shape {FLAGS.size}: {n_params / 1e6:.1f}M parameters, {FLAGS.dtype}, batch {b}, prompt {p}, new {n}")
    print(f"machine: memory bandwidth {bandwidth / 1e9:.1f} GB/s, matmul peak {peak / 1e9:.0f} GFLOP/s; "
          f"roofline per decode step {roofline * 1e3:.2f} ms")
    print(f"ours: {tok_ours:.0f} tok/s ({step_ours * 1e3:.2f} ms/step, {step_ours / roofline:.1f}x roofline)")
    print(f"transformers: {tok_hf:.0f} tok/s ({t_hf / n * 1e3:.2f} ms/step, {t_hf / n / roofline:.1f}x roofline)")
    if same is not None:
        print(f"greedy tokens agree with transformers: {same}")
    print(f"ratio_vs_hf={tok_ours / tok_hf:.2f}")
    return 0


if __name__ == "__main__":
    app.run(main)
