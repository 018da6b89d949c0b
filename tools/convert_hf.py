"""Convert between an HF safetensors directory and our orbax params directory.

    python tools/convert_hf.py --direction=hf_to_orbax --src=HF_DIR --dst=OUR_DIR
    python tools/convert_hf.py --direction=orbax_to_hf --src=OUR_DIR --dst=HF_DIR [--max_shard_gb=4]
    python tools/convert_hf.py --direction=checkpoint_to_hf --src=WORKDIR [--step=N] [--which=policy|prm] --dst=HF_DIR

`checkpoint_to_hf` exports a training checkpoint (WORKDIR/checkpoints, written by repirl_jax.launch): the
policy, or the PRM's trunk (`--which=prm`; its scalar head goes to prm_head.json beside the weights).

Tensors keep their dtype (the round trip is bit-identical); config.json, generation_config.json and
tokenizer files are carried through. `checkpoint_to_hf` writes the run's tokenizer (WORKDIR/tokenizer: files
and chat template) and a generation_config.json whose eos_token_id lists every id our sampler stops at. The
destination appears only when complete (atomic rename).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_enum("direction", None, ["hf_to_orbax", "orbax_to_hf", "checkpoint_to_hf"], "Conversion direction.")
flags.DEFINE_integer("step", None, "checkpoint_to_hf: the step to export (default: the latest).")
flags.DEFINE_enum("which", "policy", ["policy", "prm"], "checkpoint_to_hf: which model to export.")
flags.DEFINE_string("src", None, "Source directory.")
flags.DEFINE_string("dst", None, "Destination directory (must not exist unless --overwrite).")
flags.DEFINE_bool("overwrite", False, "Replace an existing destination.")
flags.DEFINE_float("max_shard_gb", 4.0, "orbax_to_hf: largest safetensors file, in GiB.")
flags.mark_flags_as_required(["direction", "src", "dst"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from repirl_jax import hf
    start = time.time()
    try:
        if FLAGS.direction == "hf_to_orbax":
            cfg = hf.hf_to_params_dir(FLAGS.src, FLAGS.dst, overwrite=FLAGS.overwrite)
        elif FLAGS.direction == "checkpoint_to_hf":
            cfg = hf.checkpoint_to_hf(FLAGS.src, FLAGS.dst, step=FLAGS.step, which=FLAGS.which,
                                      overwrite=FLAGS.overwrite, max_shard_bytes=int(FLAGS.max_shard_gb * 2**30))
        else:
            cfg = hf.params_dir_to_hf(FLAGS.src, FLAGS.dst, overwrite=FLAGS.overwrite,
                                      max_shard_bytes=int(FLAGS.max_shard_gb * 2**30))
    except (hf.CheckpointFormatError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {FLAGS.dst} ({cfg.model_type}, {cfg.num_params() / 1e6:.2f}M parameters) "
          f"in {time.time() - start:.1f}s")
    return 0


if __name__ == "__main__":
    app.run(main)
