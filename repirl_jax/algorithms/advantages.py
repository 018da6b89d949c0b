"""Advantage estimators: one table, one signature, each jitted once per run.

    advantage(inputs: AdvantageInputs, hp: AdvantageParams) -> (adv [B, R], returns [B, R] or None)

`inputs` holds every per-row array an estimator may read (unused fields are zeros of the right shape, so
the signature never changes); `hp` is hashable and static (the config's numbers). The formulas are in
`losses.py` (and tested there against numpy); this module only selects and jits them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from repirl_jax.algorithms import losses


class AdvantageInputs(NamedTuple):
    """B rows (prompts x rows per prompt), R response slots."""
    outcome: jax.Array  # [B] outcome rewards
    process: jax.Array  # [B, R] process rewards (token rewards, discriminator logits, step scores)
    mask: jax.Array  # [B, R] response mask (0 on filtered rows)
    group: jax.Array  # [B] int32 prompt index of each row
    values: jax.Array  # [B, R] value-head estimates (PPO), else zeros
    logp_old: jax.Array  # [B, R] sampling log-probs
    ref_logp: jax.Array  # [B, R] reference log-probs (PRL), else zeros
    step_ends: jax.Array  # [B, R] step-end mask (PRL), else zeros


@dataclasses.dataclass(frozen=True)
class AdvantageParams:
    c: float = 0.05
    outcome_weight: float = 1.0
    process_mode: str = "token"
    gamma: float = 1.0  # GAE
    lam: float = 1.0
    whiten: bool = True
    eta: float = 200.0  # PRL
    reward_min: float = -10.0  # AIRL dense
    reward_max: float = 10.0
    airl_gamma: float = 0.9
    std_eps: float = 1e-4

    @classmethod
    def from_config(cls, config) -> "AdvantageParams":
        return cls(c=float(config.advantage.c), outcome_weight=float(config.advantage.outcome_weight),
                   process_mode=config.advantage.process_mode, gamma=float(config.ppo.gamma), lam=float(config.ppo.lam),
                   whiten=bool(config.ppo.whiten), eta=float(config.prl.eta), reward_min=float(config.airl.reward_min),
                   reward_max=float(config.airl.reward_max), airl_gamma=float(config.airl.gamma),
                   std_eps=float(config.airl.std_eps))


def _rloo(x: AdvantageInputs, hp: AdvantageParams):
    return losses.rloo_advantages(x.outcome, x.process, x.mask, x.group, hp.c, hp.outcome_weight,
                                  hp.process_mode), None


def _grpo(x: AdvantageInputs, hp: AdvantageParams):
    return losses.grpo_advantages(x.outcome, x.process, x.mask, x.group, hp.c, hp.outcome_weight), None


def _gae(x: AdvantageInputs, hp: AdvantageParams):
    rew = losses.token_rewards(x.outcome, x.process, x.mask, hp.c, hp.outcome_weight)
    adv, ret = losses.gae_advantages(rew, x.values, x.mask, hp.gamma, hp.lam)
    return (losses.masked_whiten(adv, x.mask) if hp.whiten else adv), ret


def _prl(x: AdvantageInputs, hp: AdvantageParams):
    return losses.prl_advantages(x.outcome, x.logp_old, x.ref_logp, x.mask, x.step_ends, x.group, hp.eta,
                                 hp.outcome_weight), None


def _airl_dense(x: AdvantageInputs, hp: AdvantageParams):
    return losses.airl_dense_advantages(x.outcome, x.process, x.mask, x.group, hp.c, hp.outcome_weight,
                                        hp.reward_min, hp.reward_max, hp.airl_gamma, hp.std_eps), None


@dataclasses.dataclass(frozen=True)
class Estimator:
    fn: Callable
    uses_values: bool = False  # needs the policy's value head (and returns value targets)
    grouped: bool = False  # normalises within each prompt's group (micro-batches must not split groups)


ESTIMATORS: dict[str, Estimator] = {
    "rloo": Estimator(_rloo, grouped=True),
    "grpo": Estimator(_grpo, grouped=True),
    "ppo": Estimator(_gae, uses_values=True),
    "prl": Estimator(_prl, grouped=True),
    "airl_dense": Estimator(_airl_dense, grouped=True),
}
# What `advantage.estimator` may name (prl / airl_dense are chosen by their algorithms).
CONFIGURABLE = ("rloo", "grpo", "ppo")


_JITTED: dict[str, Callable] = {name: jax.jit(e.fn, static_argnums=1) for name, e in ESTIMATORS.items()}


def compute(name: str, inputs: AdvantageInputs, hp: AdvantageParams):
    """(adv, returns or None) of estimator `name`, jitted (compiles once per shape and `hp`)."""
    return _JITTED[name](AdvantageInputs(*(jnp.asarray(v) for v in inputs)), hp)


@jax.jit
def masked_stats(x, mask):
    """[mean, std, max |.|] of x [B, R] (advantages, token rewards) over the response tokens (mask > 0); zeros
    when there are none. On the device: only these three numbers reach the host."""
    m = (mask > 0).astype(jnp.float32)
    mean = losses.masked_mean(x, m)
    std = jnp.sqrt(losses.masked_mean(jnp.square(x - mean), m))
    return jnp.stack([mean, std, jnp.max(jnp.where(m > 0, jnp.abs(x), 0.0))])
