"""A tiny training config for tests: the synthetic task with a one-layer Qwen3 (one device).

    python -m repirl_jax.launch --config=tests/train_config.py --workdir=DIR
"""

from repirl_jax import algorithms
from repirl_jax.config import default_config


def tiny_config(algo="repirl", **over):
    """The synthetic task with a tiny Qwen3, small enough for CI (one device)."""
    c = default_config()
    c.algo = algo
    c.model.update(preset="tiny-qwen3", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                   intermediate_size=64, dtype="float32", max_positions=128)
    c.data.update(train="synthetic", val="synthetic", tokenizer="synthetic", prompt_format="raw", domain="synthetic",
                  prompts_per_iter=4, experts_per_prompt=2)
    c.data.synthetic.update(n_train=64, n_val=8, n_test=8, num_steps=(2, 2))
    c.data.filter.enabled = False
    c.reward.kind = "synthetic"
    c.rollout.update(n=2, max_prompt_len=12, max_response_len=24, prompts_per_call=4)
    c.policy.update(lr=1e-3, minibatch_prompts=2, micro_batch=2)
    c.prm.update(lr=1e-3, minibatch_prompts=4, micro_batch=4)
    c.train.update(max_iterations=2, checkpoint_every=1, eval_every=1, eval_batch=8, logp_chunk=8,
                   async_checkpoint=False)
    c.mesh.update(data=1, fsdp=1, tensor=1, devices=1)
    if algo in algorithms.names():  # the settings that define the method (e.g. prime: prm.head=implicit)
        algorithms.apply_settings(c, algorithms.get(algo).required)
    algorithms.apply_settings(c, over)
    return c


def get_config():
    return tiny_config()
