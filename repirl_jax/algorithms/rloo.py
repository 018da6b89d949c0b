"""RLOO: outcome reward only, leave-one-out baseline over each prompt's n rollouts (METHOD.md section 4)."""

from repirl_jax.algorithms.base import Algorithm, register


class RLOO(Algorithm):
    name = "rloo"
    required = {"advantage.estimator": "rloo"}
    paper = {"advantage.c": 0.0}  # no PRM: outcome reward only


register(RLOO())
