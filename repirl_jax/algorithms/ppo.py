"""PPO: outcome reward only, GAE advantages from a value head trained beside the policy (METHOD.md 4)."""

from repirl_jax.algorithms.base import Algorithm, register


class PPO(Algorithm):
    name = "ppo"
    required = {"advantage.estimator": "ppo"}
    paper = {"advantage.c": 0.0}


register(PPO())
