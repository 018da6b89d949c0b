"""rePIRL on Qwen2.5-3B-Instruct with the paper's settings (METHOD.md section 6).

    python -m repirl_jax.launch --config=configs/qwen25_3b.py --workdir=runs/qwen25_3b \
        --config.model.path=/models/Qwen2.5-3B-Instruct --config.data.train=/data/math_train.jsonl \
        --config.data.val=/data/math_val.jsonl
"""

from repirl_jax.config import paper_config


def get_config():
    return paper_config("qwen25_3b", algo="repirl")
