"""Baseline: rloo with the paper's Qwen2.5-3B-Instruct settings (METHOD.md sections 4 and 6).

    python -m repirl_jax.launch --config=configs/rloo.py --config.model.path=DIR --config.data.train=FILE
"""

from repirl_jax.config import paper_config


def get_config():
    return paper_config("qwen25_3b", algo="rloo")
