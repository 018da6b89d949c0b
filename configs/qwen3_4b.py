"""rePIRL on Qwen3-4B-Base with the paper's settings (c = 0.1; METHOD.md section 6).

    python -m repirl_jax.launch --config=configs/qwen3_4b.py --config.model.path=/models/Qwen3-4B-Base ...
"""

from repirl_jax.config import paper_config


def get_config():
    return paper_config("qwen3_4b", algo="repirl")
