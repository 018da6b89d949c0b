"""The training methods, one file each, and their registry (`get(config.algo)`).

    rePIRL (repirl.py), PRIME (prime.py), AIRL dense reward (airl_dense.py), Math-Shepherd (math_shepherd.py),
    PRL (prl.py), KTO (kto.py), BC (bc.py), and the outcome-only RLOO / GRPO / PPO (rloo.py, grpo.py, ppo.py).

A new method is a subclass of `Algorithm` passed to `register` (in a file here, or in any module imported
before the run: `config.algo` then names it); see WORKSPACE.md, "Adding an algorithm".
"""

from repirl_jax.algorithms.base import (PRM_HEADS, Algorithm, Batch, ConfigError,  # noqa: F401
                                        apply_settings, estimate, get, names, register, step_ends, validate,
                                        with_experts)
# Registration order is the order of `names()` (error messages, the parametrised tests, reproduce).
from repirl_jax.algorithms import repirl, rloo, grpo, ppo, prime, bc, kto, airl_dense, prl, math_shepherd  # noqa: F401,E501,I001
