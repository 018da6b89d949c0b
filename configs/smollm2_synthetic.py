"""rePIRL on a real small checkpoint with a task it can learn: SmolLM2-135M-Instruct as policy and PRM on the
synthetic arithmetic task (data/synthetic/) shown through the checkpoint's own tokenizer and chat template.

    python -m repirl_jax.real_models smollm2-135m-instruct          # builds ~/.cache/repirl_models/...
    python -m repirl_jax.launch --config=configs/smollm2_synthetic.py --workdir=runs/smollm2_synthetic \
        --config.model.path=$HOME/.cache/repirl_models/smollm2-135m-instruct [--config.prm.head=likelihood]

Each prompt is one user turn: the chain ("55-01-11=?"), then the rules and a worked example
(`synthetic.instruction`); the demonstrations are the task's exact expert solutions, graded by the task's
scorer. Chains of 2-3 additions and subtractions modulo 100: short enough (prompts ~140 tokens, answers
~20-30) for full fine-tuning in float32 on a CPU. Untrained, the model answers none of them (it copies the
worked example or writes "The answer is"), so 20 behaviour-cloning steps on the demonstrations of 80 prompts
come first (saved in WORKDIR/warmup), then rePIRL.
Not a paper setting: the paper's are configs/qwen25_3b.py and configs/qwen3_4b.py.
"""

from repirl_jax.config import default_config


def get_config():
    c = default_config()
    c.algo = "repirl"
    c.model.update(path="", dtype="float32", param_dtype="float32", remat="none", max_positions=8192,
                   attn_block=128)
    c.data.update(train="synthetic", val="synthetic", tokenizer="", prompt_format="chat_synthetic",
                  domain="synthetic", prompts_per_iter=8, experts_per_prompt=4, val_limit=32)
    c.data.synthetic.update(n_train=512, n_val=32, n_test=64, noise=0.0, num_steps=(2, 3), modulus=100, ops="+-",
                            max_addend=19)
    c.data.filter.enabled = False
    c.reward.kind = "synthetic"
    c.warmup_bc.update(steps=20, prompts=80, batch_prompts=4, lr=5e-5)
    c.rollout.update(n=4, max_prompt_len=192, max_response_len=48, prompts_per_call=8, weights="train")
    c.policy.update(lr=2e-6, minibatch_prompts=8, micro_batch=8, entropy_coef=0.0)
    c.prm.update(lr=2e-6, minibatch_prompts=8, micro_batch=8)
    c.advantage.update(estimator="rloo", c=0.05)
    c.train.update(max_iterations=3, checkpoint_every=1, eval_every=3, eval_batch=32, logp_chunk=64)
    c.mesh.update(data=1, fsdp=1, tensor=1, devices=1)
    return c
