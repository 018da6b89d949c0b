"""What an algorithm is to the trainer, the registry, and the start-up validation.

An `Algorithm` says what a method needs (a PRM and which head, a frozen reference, demonstrations,
reasoning steps), its losses (policy micro-batch loss; PRM micro-batch losses, jitted by the trainer and run
by name through `engine.update_prm(name, ...)` / `engine.prm_step(name, ...)`), its reward-model step, its
process rewards, how it assembles the policy batch and its advantages, and its config settings and checks.
The default methods are outcome-reward RL with the PPO-clipped surrogate (RLOO / GRPO / GAE advantages per
`advantage.estimator`); each file in this package overrides what its method changes, then `register`s an
instance.

The hooks receive an `Engine` (training/engine.py: the config, the shapes, and computations on named models
- `logp`, `values`, `update_prm`, `prm_step`, `sampler`, `score` returning host arrays, `token_rewards` and
`advantages` device arrays) and the iteration's `Batch`. They return arrays and metrics; none reads or assigns
the trainer itself.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from repirl_jax.algorithms import advantages, losses
from repirl_jax.algorithms.batches import Traj, pad_right
from repirl_jax.data.prompts import PROMPT_FORMATS
from repirl_jax.errors import ConfigError
from repirl_jax.models import logprobs, prm_heads

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Batch:
    """One iteration's rollouts after scoring and filtering: `b` prompts, n rows each (B = b * n)."""
    it: int
    records: list[dict]  # the b prompt records (tokenised: prompt_ids, expert_ids)
    rollouts: Traj  # B rows grouped by prompt; response_mask is 0 on rows of filtered prompts
    logp_old: np.ndarray  # [B, R] sampling log-probs
    outcome: np.ndarray  # [B] float32 outcome rewards
    keep: np.ndarray  # [b] 1 for prompts the accuracy filter kept
    group: np.ndarray  # [B] int32 prompt index per row
    ref_logp: np.ndarray | None = None  # [B, R] the frozen reference's, when `needs_ref`
    process: Any = None  # [B, R] process rewards after the reward-model step (a device array from a PRM)


class Algorithm:
    """Outcome-reward RL with the PPO-clipped policy loss; subclasses change what their method changes."""
    name = ""
    uses_rollouts = True  # False: the policy step reads demonstrations only (BC)
    needs_prm = False  # trains a reward model (the PRM / discriminator) each iteration
    needs_reference = False  # a frozen copy of the initial policy (also whenever policy.kl_coef > 0)
    needs_experts = False  # demonstrations in each prompt's batch (data.experts_per_prompt >= 1)
    experts_in_data = False  # every training prompt must have demonstrations
    uses_steps = False  # reads reasoning steps (steps.delimiter must be one token)
    uses_advantages = True  # its policy loss reads `adv` (so group-wise estimators constrain micro-batches)
    step_reduce = "mean"  # a step's score from token rewards: mean over its tokens, or "last" (its end)
    required: dict = {}  # settings that define the method (applied by paper_config, tests, reproduce)
    allowed: dict = {}  # further values a required setting may take (options beyond the paper)
    paper: dict = {}  # the paper's further settings for it (paper_config)

    # -- what it needs ------------------------------------------------------------------------------------

    def needs_ref(self, config) -> bool:
        return self.needs_reference or config.policy.kl_coef > 0

    def rollout_ref_logp(self, config) -> bool:
        """Whether the trainer computes the reference's log-probs of the rollouts (Batch.ref_logp)."""
        return self.needs_ref(config)

    def prm_rows_per_prompt(self, config) -> int:
        return config.rollout.n

    def policy_rows_per_prompt(self, config) -> int:
        return config.rollout.n

    def estimator(self, config) -> str:
        return config.advantage.estimator

    def needs_value_head(self, config) -> bool:
        """Whether the policy carries a value head (its advantage estimator reads values: GAE)."""
        return advantages.ESTIMATORS[self.estimator(config)].uses_values

    def validate(self, config) -> None:
        """Checks of the method's own settings (raise ConfigError saying what to change)."""
        if self.needs_experts and config.data.experts_per_prompt < 1:
            raise ConfigError(f"algo={self.name} needs expert demonstrations: set data.experts_per_prompt >= 1")
        for key, value in self.required.items():
            if get_setting(config, key) != value and get_setting(config, key) not in self.allowed.get(key, ()):
                raise ConfigError(f"algo={self.name} needs {key}={value} (set it, or start from "
                                  f"config.paper_config(algo={self.name!r}))")

    # -- losses (pure functions of (params, micro-batch), jitted by the trainer) ---------------------------

    def policy_loss(self, config, cfg, act) -> Callable:
        """(policy, (traj, extra)) -> (loss, aux): the PPO-clipped surrogate with an entropy bonus, optional
        KL to the reference and, for a value-head estimator, the clipped value loss."""
        chunk, with_values = config.train.logp_chunk, self.needs_value_head(config)

        def loss_fn(policy, mb):
            traj, extra = mb
            hidden = logprobs.sequence_hidden(policy["model"], cfg, *traj, act=act)
            m = traj.response_mask
            lp, ent = logprobs.policy_logprobs(policy["model"], cfg, hidden, traj.response, chunk, True)
            loss, aux = losses.ppo_policy_loss(
                lp, extra["logp_old"], extra["adv"], m, ent, config.policy.clip_low, config.policy.clip_high,
                config.policy.dual_clip, config.policy.entropy_coef,
                extra["ref_logp"] if config.policy.kl_coef > 0 else None, config.policy.kl_coef, extra["num_tokens"])
            aux["logp_diff_max"] = jnp.max(jnp.abs(lp - extra["logp_old"]) * m)
            if with_values:
                v = logprobs.state_values(policy["value"], hidden, m)
                vl = losses.value_loss(v, extra["old_values"], extra["returns"], m, config.ppo.value_clip,
                                       extra["num_tokens"])
                loss = loss + config.ppo.value_coef * vl
                aux["value_loss"] = vl
            return loss, aux
        return loss_fn

    def prm_losses(self, config, cfg, act, token_rewards: Callable) -> dict[str, Callable]:
        """{name: (prm, (traj, extra)) -> (loss, aux)}; `token_rewards(prm, traj, ref_logp)` is the PRM's."""
        return {}

    # -- one iteration ----------------------------------------------------------------------------------

    def reward_model_step(self, engine, batch: Batch) -> dict:
        """One epoch of reward-model updates (step 4); returns metrics."""
        return {}

    def process_rewards(self, engine, batch: Batch):
        """[B, R] process rewards of the rollouts from the (updated) reward model (step 5), on the device."""
        return engine.token_rewards(batch.rollouts, batch.ref_logp)

    def policy_batch(self, engine, batch: Batch) -> tuple[Traj, dict, int]:
        """(rows, per-row inputs of the policy loss, rows per prompt) of the policy step (step 6)."""
        extra = {"logp_old": batch.logp_old.astype(np.float32)}
        if batch.ref_logp is not None:
            extra["ref_logp"] = batch.ref_logp
        extra.update(estimate(engine, self.estimator(engine.config), batch.rollouts, batch.outcome, batch.process,
                              batch.group, batch.logp_old, batch.ref_logp))
        return batch.rollouts, extra, engine.num_rollouts

    def offline_batch(self, engine, records: list[dict]) -> tuple[Traj, dict, int]:
        """The policy batch of a method without rollouts (uses_rollouts = False)."""
        raise NotImplementedError(self.name)


# --- helpers the algorithms share ---------------------------------------------------------------------

def estimate(engine, name: str, traj: Traj, outcome, process, group, logp_old, ref_logp=None, step_ends=None,
             ) -> dict:
    """{"adv": [B, R]} (and for a value-head estimator "returns", "old_values") from the jitted table; adv
    and returns stay on the device (the update takes its mini-batches from them there)."""
    shape = traj.response_mask.shape
    zeros = np.zeros(shape, np.float32)
    est = advantages.ESTIMATORS[name]
    values = engine.values(traj) if est.uses_values else zeros
    inputs = advantages.AdvantageInputs(
        np.asarray(outcome, np.float32), zeros if process is None else process, traj.response_mask,
        np.asarray(group, np.int32), values, np.asarray(logp_old, np.float32),
        zeros if ref_logp is None else ref_logp, zeros if step_ends is None else step_ends)
    adv, ret = engine.advantages(name, inputs)
    out = {"adv": adv}
    if est.uses_values:
        out.update(returns=ret, old_values=values)
    return out


def with_experts(engine, records, rollouts: Traj, keep, extra_blocks=()):
    """Rollouts and demonstrations grouped by prompt (its n rollouts, then its k demonstrations, then k
    responses of each further block, e.g. perturbed demonstrations: lists of b * k token lists), and
    `cat(rollout_rows, expert_rows, *block_rows)` that puts any per-row array into the same order."""
    n, k, b = engine.num_rollouts, engine.num_experts, len(records)
    blocks = [[ids for r in records for ids in r["expert_ids"]], *extra_blocks]
    padded = [pad_right(ids, engine.response_len, engine.pad_id) for ids in blocks]
    pt, pm = engine.prompt_arrays(records, k)
    order = np.concatenate([np.concatenate([np.arange(i * n, (i + 1) * n)] + [
        b * n + j * b * k + np.arange(i * k, (i + 1) * k) for j in range(len(blocks))]) for i in range(b)])
    cat = lambda *arrays: np.concatenate(arrays)[order]  # noqa: E731
    row_keep = np.repeat(keep, k)[:, None]
    traj = Traj(cat(rollouts.prompt, *[pt] * len(blocks)), cat(rollouts.prompt_mask, *[pm] * len(blocks)),
                cat(rollouts.response, *[t for t, _ in padded]),
                cat(rollouts.response_mask, *[mk * row_keep for _, mk in padded]))
    return traj, cat


def step_ends(engine, traj: Traj) -> np.ndarray:
    """`losses.step_end_mask` of response rows (steps.delimiter or steps.every), [B, R] float32."""
    return np.asarray(losses.step_end_mask(traj.response, traj.response_mask, engine.step_delim_id,
                                           engine.config.steps.every))


# --- the registry -------------------------------------------------------------------------------------

REGISTRY: dict[str, Algorithm] = {}


def means(agg: dict) -> dict:
    """{metric: the mean of its per-step list (or the value itself)} of an `Engine.record` accumulator."""
    return {key: (float(np.mean(v)) if isinstance(v, list) else v) for key, v in agg.items()}


def register(algorithm: Algorithm) -> Algorithm:
    """Make `algorithm` available as config.algo = algorithm.name (a later registration replaces one)."""
    if not algorithm.name:
        raise ValueError(f"{type(algorithm).__name__} has no name")
    REGISTRY[algorithm.name] = algorithm
    return algorithm


def get(name: str) -> Algorithm:
    if name not in REGISTRY:
        raise ConfigError(f"algo={name!r}: expected one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_setting(config, key: str):
    """The value at a dotted key of a ConfigDict: "prm.head" -> config.prm.head."""
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def apply_settings(config, settings: dict[str, Any]) -> None:
    """Set dotted keys of a ConfigDict: {"prm.head": "implicit"}."""
    for key, value in settings.items():
        node = config
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value


# --- start-up validation ------------------------------------------------------------------------------

PRM_HEADS = tuple(prm_heads.HEADS)  # the PRM's head: models/prm_heads.py


def validate(config, num_devices: int) -> None:
    """Start-up checks with messages that say what to change (the mesh, batch divisibility, the method)."""
    algo = get(config.algo)
    mesh_size = config.mesh.data * config.mesh.fsdp * config.mesh.tensor
    if config.mesh.get("devices", 0):
        if config.mesh.devices > num_devices:
            raise ConfigError(f"mesh.devices={config.mesh.devices} but only {num_devices} devices are available")
        num_devices = config.mesh.devices
    if -1 not in (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) and mesh_size != num_devices:
        m = config.mesh
        raise ConfigError(f"mesh (data={m.data}, fsdp={m.fsdp}, tensor={m.tensor}) has {mesh_size} "
                          f"devices but {num_devices} are available: set mesh.data * mesh.fsdp * mesh.tensor = "
                          f"{num_devices} (or one of them to -1), or mesh.devices to use fewer")
    if config.data.prompt_format not in PROMPT_FORMATS:
        raise ConfigError(f"data.prompt_format={config.data.prompt_format!r}: expected one of {PROMPT_FORMATS}")
    if algo.needs_prm and config.prm.head not in PRM_HEADS:
        raise ConfigError(f"prm.head={config.prm.head!r}: expected one of {PRM_HEADS}")
    b, mb = config.data.prompts_per_iter, config.policy.minibatch_prompts
    if b % mb:
        raise ConfigError(f"policy.minibatch_prompts={mb} does not divide data.prompts_per_iter={b}")
    if algo.needs_prm and b % config.prm.minibatch_prompts:
        raise ConfigError(f"prm.minibatch_prompts={config.prm.minibatch_prompts} does not divide "
                          f"data.prompts_per_iter={b}")
    n = config.rollout.n
    per_prompt = algo.policy_rows_per_prompt(config)
    rows = mb * per_prompt
    if rows % config.policy.micro_batch:
        raise ConfigError(f"policy.micro_batch={config.policy.micro_batch} rows does not divide a mini-batch of {rows} "
                          f"rows (minibatch_prompts={mb} x {per_prompt} rows per prompt)")
    if config.advantage.estimator not in advantages.CONFIGURABLE:
        raise ConfigError(f"advantage.estimator={config.advantage.estimator!r}: expected rloo, grpo or ppo")
    if algo.uses_advantages and advantages.ESTIMATORS[config.advantage.estimator].grouped:
        if config.policy.micro_batch % n and n % config.policy.micro_batch:
            raise ConfigError(f"policy.micro_batch={config.policy.micro_batch} would split a group of n={n} rollouts "
                              f"unevenly; use a multiple or a divisor of n")
    if algo.needs_prm:
        prm_rows = config.prm.minibatch_prompts * algo.prm_rows_per_prompt(config)
        if prm_rows % config.prm.micro_batch:
            raise ConfigError(f"prm.micro_batch={config.prm.micro_batch} does not divide a PRM mini-batch of "
                              f"{prm_rows} rows (prm.minibatch_prompts x {algo.prm_rows_per_prompt(config)} rows "
                              "per prompt)")
    algo.validate(config)
    if config.rollout.max_prompt_len + config.rollout.max_response_len > config.model.max_positions:
        raise ConfigError(f"rollout.max_prompt_len + rollout.max_response_len = "
                          f"{config.rollout.max_prompt_len + config.rollout.max_response_len} exceeds the model's "
                          f"max_positions={config.model.max_positions} (the KV cache cannot hold it)")
    if config.data.filter.enabled and not 0 <= config.data.filter.low <= config.data.filter.high <= 1:
        raise ConfigError(f"data.filter low={config.data.filter.low}, high={config.data.filter.high}: "
                          "need 0 <= low <= high <= 1")
    if config.rollout.get("weights", "train") not in ("train", "replicated", "tensor"):
        raise ConfigError(f"rollout.weights={config.rollout.weights!r}: expected train, replicated or tensor")
    if config.rollout.temperature != 1.0 or config.rollout.top_p != 1.0:
        log.warning("rollouts sample at temperature=%s top_p=%s: logp_old, the PPO ratio and the importance "
                    "weights all use that tempered distribution", config.rollout.temperature, config.rollout.top_p)
