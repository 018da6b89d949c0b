"""rePIRL on Qwen3-4B-Base with the paper's settings (c = 0.1; METHOD.md section 6).

    python -m repirl_jax.launch --config=configs/qwen3_4b.py --config.model.path=/models/Qwen3-4B-Base ...
"""

from repirl_jax.config import paper_config


def get_config():
    c = paper_config("qwen3_4b", algo="repirl")
    # Qwen3-4B has 8 KV heads (Qwen2.5-3B: 2), so a 4,535-token KV cache row is 4x larger (0.62 GiB in bf16):
    # 32 prompts x 4 samples per sampler call (16 rows per device on 8) keep the sampler at 30.71 GiB per
    # device as a GPU holds it (tools/memory_plan.py; results/memory_plan/qwen3_4b_full_addc3f0.txt); 8 rows
    # per device needed 26.60 GiB and 32 rows ~44.5 GiB (cache 19.9 GiB) at 6347630.
    c.rollout.prompts_per_call = 32
    return c
