"""rePIRL on Qwen2.5-3B-Instruct with the paper's settings (METHOD.md section 6).

    python -m repirl_jax.launch --config=configs/qwen25_3b.py --workdir=runs/qwen25_3b \
        --config.model.path=/models/Qwen2.5-3B-Instruct --config.data.train=/data/math_train.jsonl \
        --config.data.val=/data/math_val.jsonl
"""

from repirl_jax.config import paper_config


def get_config():
    c = paper_config("qwen25_3b", algo="repirl")
    # All 128 prompts x 4 samples in one sampler call (64 rows per device on 8): decoding is bound by reading
    # the weights once per step, so one call of 64 rows beats four of 16. Sampler peak as a GPU holds it
    # 26.85 GiB per device (tools/memory_plan.py; results/memory_plan/qwen25_3b_full_addc3f0.txt).
    c.rollout.prompts_per_call = 128
    return c
