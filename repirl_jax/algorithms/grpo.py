"""GRPO: outcome reward only, advantages normalised by each prompt group's mean and std (METHOD.md 4)."""

from repirl_jax.algorithms.base import Algorithm, register


class GRPO(Algorithm):
    name = "grpo"
    required = {"advantage.estimator": "grpo"}
    paper = {"advantage.c": 0.0}


register(GRPO())
