"""Evaluation defaults: greedy pass@1 as in the paper (section 4.1), prompts up to 1535 tokens, 3000 new.

    python -m repirl_jax.evaluate --config=configs/eval.py --hf_dir=DIR --benchmarks=math500 \
        --config.eval.max_new_tokens=1024
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict(dict(dtype="bfloat16"))  # compute dtype (log-softmax is float32)
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))  # -1: all remaining devices
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=16,  # prompts per sampler call (a fixed shape: never recompiles)
        max_prompt_len=1535,
        max_new_tokens=3000,
        long_prompts="truncate",  # truncate (keep the last max_prompt_len tokens, counted) | error
        top_p=1.0,
        math_timeout_s=10.0,
        code_timeout_s=10.0,
        score_workers=2,
    ))
    return c
