"""rePIRL with LoRA on a real checkpoint, on this CPU: Qwen2.5-Coder-0.5B-Instruct as the frozen base of two
adapters, the policy's and the likelihood PRM's (one base in memory; the reference model is the base), on easy
MATH problems with expert demonstrations from Qwen2.5-Coder-1.5B-Instruct (`make_experts`, README "LoRA").

    python -m repirl_jax.real_models qwen2.5-coder-0.5b-instruct
    python -m repirl_jax.launch --config=configs/qwen05_lora.py --workdir=runs/qwen05_lora \
        --config.model.path=$HOME/.cache/repirl_models/qwen2.5-coder-0.5b-instruct \
        --config.data.train=results/real_experts/qwen15_math_easy/train.jsonl \
        --config.data.val=results/real_experts/qwen15_math_easy/val.jsonl

Full fine-tuning of a 0.5B policy and a 0.5B PRM with AdamW in float32 holds ~20 GB of parameters, gradients
and moments before activations: more than this machine's 24 GiB. Here the trainable state is two rank-16
adapters (~9M parameters each with their moments); the base's 2.5 GB are held once. A short run (float32 on
the CPU; relaunching the command resumes), not a paper setting.
"""

from repirl_jax.config import default_config


def get_config():
    c = default_config()
    c.algo = "repirl"
    c.model.update(path="", dtype="float32", param_dtype="float32", remat="full", max_positions=32768,
                   attn_block=128)
    c.data.update(prompt_format="chat_math", domain="math", prompts_per_iter=4, experts_per_prompt=4,
                  val_limit=24)
    c.data.filter.enabled = False  # keep every prompt: IRL learns from the demonstrations either way
    c.reward.update(kind="math", workers=2)
    c.rollout.update(n=4, max_prompt_len=256, max_response_len=320, prompts_per_call=4, weights="train")
    lora = dict(rank=16, alpha=32.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
    c.policy.update(lr=1e-5, minibatch_prompts=4, micro_batch=4, entropy_coef=0.0)
    c.policy.lora.update(**lora)
    c.prm.update(head="likelihood", lr=1e-5, minibatch_prompts=4, micro_batch=4)
    c.prm.lora.update(**lora)
    c.advantage.update(estimator="rloo", c=0.05)
    c.train.update(max_iterations=8, checkpoint_every=1, eval_every=4, eval_batch=8, logp_chunk=64)
    c.mesh.update(data=1, fsdp=1, tensor=1, devices=1)
    return c
