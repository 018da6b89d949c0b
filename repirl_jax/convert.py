"""Convert between an HF safetensors directory and our orbax params directory, or export a training run.

    python -m repirl_jax.convert --direction=hf_to_orbax --src=HF_DIR --dst=OUR_DIR
    python -m repirl_jax.convert --direction=orbax_to_hf --src=OUR_DIR --dst=HF_DIR [--max_shard_gb=4]
    python -m repirl_jax.convert --direction=checkpoint_to_hf --src=WORKDIR [--step=N] [--which=policy|prm] --dst=HF_DIR
    python -m repirl_jax.convert --direction=checkpoint_to_peft --src=WORKDIR [--step=N] [--which=policy|prm] --dst=DIR

(installed: `repirl-convert ...`; `python tools/convert_hf.py ...` in a checkout is the same program.)
`checkpoint_to_hf` exports a training checkpoint (WORKDIR/checkpoints, written by repirl_jax.launch): the
policy, or the PRM's trunk (`--which=prm`; its scalar head goes to prm_head.json beside the weights); a LoRA
model's adapter is merged into its base. `checkpoint_to_peft` writes a LoRA model's adapter alone in PEFT's
format (adapter_config.json + adapter_model.safetensors), which `peft.PeftModel.from_pretrained` loads onto
the transformers model of the base directory the run names (WORKDIR/lora_bases.json).

Tensors keep their dtype (the round trip is bit-identical); config.json, generation_config.json and
tokenizer files are carried through. `checkpoint_to_hf` writes the run's tokenizer (WORKDIR/tokenizer: files
and chat template) and a generation_config.json whose eos_token_id lists every id our sampler stops at. The
destination appears only when complete (atomic rename).
"""

from __future__ import annotations

import sys
import time

from repirl_jax import cli as cli_lib
from repirl_jax.checkpoints import hf


def main(argv) -> int:
    del argv
    from absl import flags, logging

    FLAGS = flags.FLAGS
    logging.set_verbosity(logging.WARNING)
    start = time.time()
    shard = int(FLAGS.max_shard_gb * 2**30)
    try:
        if FLAGS.direction == "hf_to_orbax":
            cfg = hf.hf_to_params_dir(FLAGS.src, FLAGS.dst, overwrite=FLAGS.overwrite)
        elif FLAGS.direction == "checkpoint_to_peft":
            cfg = hf.checkpoint_to_peft(FLAGS.src, FLAGS.dst, step=FLAGS.step, which=FLAGS.which,
                                        overwrite=FLAGS.overwrite)
        elif FLAGS.direction == "checkpoint_to_hf":
            cfg = hf.checkpoint_to_hf(FLAGS.src, FLAGS.dst, step=FLAGS.step, which=FLAGS.which,
                                      overwrite=FLAGS.overwrite, max_shard_bytes=shard)
        else:
            cfg = hf.params_dir_to_hf(FLAGS.src, FLAGS.dst, overwrite=FLAGS.overwrite, max_shard_bytes=shard)
    except (hf.CheckpointFormatError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = f"a LoRA adapter of {cfg.num_lora_params() / 1e6:.2f}M" if FLAGS.direction == "checkpoint_to_peft" else \
        f"{cfg.num_params() / 1e6:.2f}M"
    print(f"wrote {FLAGS.dst} ({cfg.model_type}, {size} parameters) "
          f"in {time.time() - start:.1f}s")
    return 0


def cli() -> None:
    """The command (python -m repirl_jax.convert, repirl-convert, tools/convert_hf.py): flags, then main."""
    from absl import flags

    flags.DEFINE_enum("direction", None, ["hf_to_orbax", "orbax_to_hf", "checkpoint_to_hf", "checkpoint_to_peft"],
                      "Conversion direction.")
    flags.DEFINE_integer("step", None, "checkpoint_to_*: the step to export (default: the latest).")
    flags.DEFINE_enum("which", "policy", ["policy", "prm"], "checkpoint_to_*: which model to export.")
    flags.DEFINE_string("src", None, "Source directory.")
    flags.DEFINE_string("dst", None, "Destination directory (must not exist unless --overwrite).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing destination.")
    flags.DEFINE_float("max_shard_gb", 4.0, "orbax_to_hf: largest safetensors file, in GiB.")
    flags.mark_flags_as_required(["direction", "src", "dst"])
    cli_lib.run_app(main, __name__)


if __name__ == "__main__":
    cli()
