"""rePIRL on a real small checkpoint, on this CPU: SmolLM2-135M-Instruct as policy and PRM, easy MATH problems
with expert demonstrations from Qwen2.5-Coder-1.5B-Instruct (`make_experts`, README "Real checkpoints").

    python -m repirl_jax.real_models smollm2-135m-instruct          # builds ~/.cache/repirl_models/...
    python -m repirl_jax.launch --config=configs/smollm2_math.py --workdir=runs/smollm2_math \
        --config.model.path=$HOME/.cache/repirl_models/smollm2-135m-instruct \
        --config.data.train=results/real_experts/qwen15_math_easy/train.jsonl \
        --config.data.val=results/real_experts/math500_level1.jsonl [--config.prm.head=likelihood]

A short run (a few iterations) that puts a real checkpoint, tokenizer and chat template through rollouts,
the IRL reward-model step and the policy step; float32 on the CPU. Peak memory (README "Full fine-tuning on
SmolLM2-135M-Instruct"): 23 GB with remat none (this config), 15.4 GB with --config.model.remat=full.
Not a paper setting: the paper's are configs/qwen25_3b.py and configs/qwen3_4b.py.
"""

from repirl_jax.config import default_config


def get_config():
    c = default_config()
    c.algo = "repirl"
    c.model.update(path="", dtype="float32", param_dtype="float32", remat="none", max_positions=8192,
                   attn_block=128)
    c.data.update(prompt_format="chat_math", domain="math", prompts_per_iter=8, experts_per_prompt=4,
                  val_limit=16)
    c.data.filter.enabled = False  # a 135M model solves few of these: keep every prompt (IRL still learns)
    c.reward.update(kind="math", workers=2)
    c.rollout.update(n=4, max_prompt_len=256, max_response_len=384, prompts_per_call=8, weights="train")
    c.policy.update(lr=1e-6, minibatch_prompts=8, micro_batch=8, entropy_coef=0.0)
    c.prm.update(lr=1e-6, minibatch_prompts=8, micro_batch=8)
    c.advantage.update(estimator="rloo", c=0.05)
    c.train.update(max_iterations=3, checkpoint_every=1, eval_every=3, eval_batch=8, logp_chunk=128)
    c.mesh.update(data=1, fsdp=1, tensor=1, devices=1)
    return c
