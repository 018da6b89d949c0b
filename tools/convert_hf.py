"""The conversion command from a checkout: the same program as `python -m repirl_jax.convert` (installed:
`repirl-convert`); see repirl_jax/convert.py for the directions and flags."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from repirl_jax.convert import cli  # noqa: E402

if __name__ == "__main__":
    cli()
