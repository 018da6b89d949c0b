"""python -m repirl_jax.launch --config=configs/NAME.py --workdir=DIR   (default: configs/demo.py)

Training (Algorithm 1 of the rePIRL paper) is not built yet: this entry point says so and exits 2
until the training loop lands.
"""

import sys


def main() -> int:
    print("repirl_jax.launch: the training loop and the embedded demo (configs/demo.py) are not built yet. "
          "What exists: the Qwen2/2.5/3 models, sharding, HF conversion (tools/convert_hf.py), logit "
          "parity (tools/check_logits.py) and checkpoints. See README.md.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
