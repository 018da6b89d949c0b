"""Compare our Qwen implementation with transformers on a checkpoint, logit by logit.

    python tools/check_logits.py --hf_dir=DIR [--dtype=float32|bfloat16] [--generate=N]

Runs both models (transformers on the torch CPU build, ours in JAX) on a fixed batch of four rows with
left padding and mixed lengths; prints the largest absolute logit difference over real tokens, and that
difference relative to the largest |logit| of the reference (`rel_diff`), as the last line
`max_abs_diff=<value> rel_diff=<value>`, and exits 1 when rel_diff is above the tolerance. The tolerance is
relative to the logits' scale because float32 rounding differences grow with it (and with depth), and the
CPU's kernels move it: 1e-4 in float32. On an Intel Xeon (AVX-512, AMX) Qwen2.5-Coder-0.5B gave rel 1.7e-5
and SmolLM2-135M 1.4e-5 (transformers batched-and-left-padded vs alone: 2.4e-5 and 2.2e-5); on an AMD EPYC,
Qwen2.5-Coder-0.5B gives 6.5e-5, where against a float64 run of transformers its own float32 is off by
2.4e-5 and ours by 4.0e-5 (the two errors add). 2e-2 in bfloat16, where both sides round differently.
`--generate=N` also compares N greedy tokens per row, token for token.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string("hf_dir", None, "HF model directory (config.json + safetensors).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype on both sides.")
flags.DEFINE_integer("generate", 0, "Also compare this many greedy tokens per row (0: off).")
flags.DEFINE_float("tolerance", None, "Override the rel_diff tolerance (max_abs_diff / max |reference logit|).")
flags.DEFINE_integer("seed", 0, "Seed of the fixed input batch.")
flags.mark_flag_as_required("hf_dir")
FLAGS = flags.FLAGS

LENGTHS = (16, 11, 7, 3)
RELATIVE_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}  # real tokens per row; rows are left-padded to the longest


def fixed_batch(vocab_size: int, seed: int):
    import numpy as np
    rng = np.random.RandomState(seed)
    t = max(LENGTHS)
    tokens = rng.randint(0, min(vocab_size, 151643), size=(len(LENGTHS), t))
    mask = np.zeros((len(LENGTHS), t), np.int32)
    for i, n in enumerate(LENGTHS):
        mask[i, t - n:] = 1
    tokens = tokens * mask  # padding token 0, masked anyway
    return tokens, mask


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from repirl_jax.checkpoints import hf
    from repirl_jax.models import qwen
    from repirl_jax.models.config import QwenConfig

    torch.set_num_threads(2)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[FLAGS.dtype]
    cfg = QwenConfig.from_hf_dir(FLAGS.hf_dir, dtype=FLAGS.dtype)
    ref = transformers.AutoModelForCausalLM.from_pretrained(FLAGS.hf_dir, dtype=torch_dtype).eval()
    params, cfg = hf.load_hf_params(FLAGS.hf_dir, cfg=cfg, dtype=FLAGS.dtype)
    tokens, mask = fixed_batch(cfg.vocab_size, FLAGS.seed)
    with torch.no_grad():
        ref_logits = ref(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.float().numpy()
    hidden, _ = qwen.forward(params, cfg, jnp.asarray(tokens), qwen.positions_from_mask(jnp.asarray(mask)),
                             jnp.asarray(mask))
    ours = np.asarray(qwen.lm_logits(params, cfg, hidden))
    diff = float((np.abs(ours - ref_logits) * mask[..., None]).max())
    scale = float((np.abs(ref_logits) * mask[..., None]).max())
    rel = diff / max(scale, 1e-30)
    tol = FLAGS.tolerance if FLAGS.tolerance is not None else RELATIVE_TOLERANCE[FLAGS.dtype]
    print(f"{cfg.model_type}: {cfg.num_params() / 1e6:.2f}M parameters, dtype={FLAGS.dtype}, "
          f"batch lengths {LENGTHS} (left-padded), max |reference logit| {scale:.3g}, relative tolerance {tol:g}")
    ok = rel <= tol
    if FLAGS.generate:
        try:
            from repirl_jax.generation import sampling
        except ImportError:
            print("generate: the sampler (repirl_jax.generation.sampling) is not built yet")
            ok = False
        else:
            with torch.no_grad():
                out = ref.generate(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                                   max_new_tokens=FLAGS.generate, min_new_tokens=FLAGS.generate,
                                   do_sample=False, eos_token_id=None, pad_token_id=0)
            ref_new = out[:, tokens.shape[1]:].numpy()
            result = sampling.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(mask),
                                       sampling.SamplingConfig(max_new_tokens=FLAGS.generate, greedy=True,
                                                               stop_token_ids=()))
            ours_new = np.asarray(result.tokens)
            same = ours_new == ref_new
            print(f"generate: {FLAGS.generate} greedy tokens x {len(LENGTHS)} rows: "
                  f"{'match' if same.all() else 'MISMATCH'} ({int(same.sum())}/{same.size} equal)")
            ok = ok and bool(same.all())
    print(f"max_abs_diff={diff:.3e} rel_diff={rel:.3e}")
    return 0 if ok else 1


if __name__ == "__main__":
    app.run(main)
