"""Algorithm 1 of rePIRL (and the baselines that share its loop), with jitted PRM and policy steps.

One iteration, in METHOD.md's order:
  1. rollouts: n samples per prompt from the current policy (the sampler's log-probs are logp_old)
  2. outcome rewards (answer checking / tests / the synthetic checker)
  3. prompt filter: prompts whose rollout accuracy is outside [low, high] are masked out (shapes stay fixed)
  4. PRM step on expert demonstrations + rollouts (rePIRL: Eq. 3-5; PRIME: implicit-PRM cross-entropy)
  5. process rewards of the rollouts from the UPDATED PRM
  6. advantages (RLOO token/sequence, GRPO, or GAE with a value head for PPO)
  7. policy step: PPO-clipped surrogate, entropy bonus, optional KL to a frozen reference
BC and KTO use the same loop with their own losses. The other process-reward methods (METHOD.md section 4)
change steps 4-6 only: airl_dense trains the scalar-head PRM as a token-wise expert-vs-policy discriminator
and uses its group-normalised, discounted logits as the advantage; prl needs no PRM (its process reward is
the outcome advantage minus the policy/reference log-ratio to go, at step ends); math_shepherd labels each
step of the rollouts by k completions from its prefix and trains the PRM by per-step BCE.
Every array has a fixed shape per config, so each jitted step compiles once; mini-batches are split into
micro-batches whose gradients are accumulated inside one jitted `lax.scan`.

Batch terms (README, "Batch terms"): prompts_per_iter prompts per iteration; n = rollout.n rollouts per
prompt; k = data.experts_per_prompt demonstrations per prompt; a mini-batch of `minibatch_prompts` prompts
(all their rollouts, and for the PRM all their demonstrations) is one optimiser step; a micro-batch of
`micro_batch` rows is one forward/backward pass.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from repirl_jax import distributed, logprobs, losses, sampling
from repirl_jax.models import heads, qwen
from repirl_jax.models.config import QwenConfig
from repirl_jax.sharding import (LOGICAL_AXIS_RULES, ActivationSharding, data_parallel_rules, logical_sharding,
                                 optimizer_shardings, tree_shardings)

log = logging.getLogger(__name__)
ALGOS = ("repirl", "rloo", "grpo", "ppo", "prime", "bc", "kto", "airl_dense", "prl", "math_shepherd")
# Per-micro-batch metrics already divided by the whole mini-batch's token count: they add up.
_ADDITIVE = frozenset({"pg_loss", "entropy", "clip_frac", "approx_kl", "kl_ref", "value_loss", "bc_nll",
                       "disc_acc", "step_acc"})


class ConfigError(ValueError):
    """A training config that cannot run; the message says what to change."""


# --- batches ------------------------------------------------------------------------------------------

class Traj(NamedTuple):
    """Trajectories in the [prompt | response] layout. N rows, P prompt slots, R response slots."""
    prompt: Any  # [N, P] int32, left-padded
    prompt_mask: Any  # [N, P] int32
    response: Any  # [N, R] int32, right-padded
    response_mask: Any  # [N, R] float32 (0 also on rows that are filtered out)


def _stack_micro(tree, n_micro):
    """[rows, ...] -> [n_micro, rows / n_micro, ...] for the accumulation scan."""
    return jax.tree.map(lambda x: x.reshape((n_micro, x.shape[0] // n_micro) + x.shape[1:]), tree)


def encode_prompts(tokenizer, texts: Sequence[str], max_len: int, long_prompts: str):
    """Token ids per prompt; too-long prompts are truncated on the left or skipped (None), per config."""
    out, n_long = [], 0
    for t in texts:
        ids = tokenizer.encode(t, add_special_tokens=False)
        if len(ids) > max_len:
            n_long += 1
            ids = ids[-max_len:] if long_prompts == "truncate" else None
        out.append(ids)
    return out, n_long


def encode_responses(tokenizer, texts: Sequence[str], max_len: int, eos_id: int):
    """Response ids + eos, cut to max_len (the cut is counted)."""
    out, n_cut = [], 0
    for t in texts:
        ids = tokenizer.encode(t, add_special_tokens=False) + [eos_id]
        if len(ids) > max_len:
            n_cut += 1
            ids = ids[:max_len]
        out.append(ids)
    return out, n_cut


def pad_right(seqs: Sequence[Sequence[int]], length: int, pad_id: int = 0):
    tokens = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.float32)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return tokens, mask


# --- the trainer --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Models:
    cfg: QwenConfig
    policy: dict  # trainable policy tree {"model": qwen params[, "value": head]}
    prm: dict | None  # {"trunk", "head"} (scalar) or qwen params (implicit); None when unused
    ref: dict | None  # frozen reference qwen params, when a loss needs one


def needs_prm(config) -> bool:
    return config.algo in ("repirl", "prime", "airl_dense", "math_shepherd")


def needs_ref(config) -> bool:
    return config.algo in ("kto", "prime", "prl") or config.policy.kl_coef > 0


def prm_rows_per_prompt(config) -> int:
    """Rows per prompt in the PRM's batch: rollouts, plus demonstrations (rePIRL, AIRL) and perturbed
    demonstrations (AIRL with airl.perturbed_negatives)."""
    c, n, k = config, config.rollout.n, config.data.experts_per_prompt
    if c.algo == "repirl":
        return n + k
    if c.algo == "airl_dense":
        return n + k * (2 if c.airl.perturbed_negatives else 1)
    return n


def policy_rows_per_prompt(config) -> int:
    c, n, k = config, config.rollout.n, config.data.experts_per_prompt
    if c.algo == "bc":
        return max(k, 1)
    if c.algo == "kto" or (c.algo == "airl_dense" and c.airl.experts_in_group):
        return n + k
    return n


def validate(config, num_devices: int) -> None:
    """Start-up checks with messages that say what to change."""
    c = config
    if c.algo not in ALGOS:
        raise ConfigError(f"algo={c.algo!r}: expected one of {ALGOS}")
    mesh_size = c.mesh.data * c.mesh.fsdp * c.mesh.tensor
    if c.mesh.get("devices", 0):
        if c.mesh.devices > num_devices:
            raise ConfigError(f"mesh.devices={c.mesh.devices} but only {num_devices} devices are available")
        num_devices = c.mesh.devices
    if -1 not in (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) and mesh_size != num_devices:
        raise ConfigError(f"mesh (data={c.mesh.data}, fsdp={c.mesh.fsdp}, tensor={c.mesh.tensor}) has {mesh_size} "
                          f"devices but {num_devices} are available: set mesh.data * mesh.fsdp * mesh.tensor = "
                          f"{num_devices} (or one of them to -1), or mesh.devices to use fewer")
    b, mb = c.data.prompts_per_iter, c.policy.minibatch_prompts
    if b % mb:
        raise ConfigError(f"policy.minibatch_prompts={mb} does not divide data.prompts_per_iter={b}")
    if needs_prm(c) and b % c.prm.minibatch_prompts:
        raise ConfigError(f"prm.minibatch_prompts={c.prm.minibatch_prompts} does not divide "
                          f"data.prompts_per_iter={b}")
    n = c.rollout.n
    per_prompt = policy_rows_per_prompt(c)
    rows = mb * per_prompt
    if rows % c.policy.micro_batch:
        raise ConfigError(f"policy.micro_batch={c.policy.micro_batch} rows does not divide a mini-batch of {rows} "
                          f"rows (minibatch_prompts={mb} x {per_prompt} rows per prompt)")
    if c.algo not in ("bc", "kto") and c.advantage.estimator in ("rloo", "grpo"):
        if c.policy.micro_batch % n and n % c.policy.micro_batch:
            raise ConfigError(f"policy.micro_batch={c.policy.micro_batch} would split a group of n={n} rollouts "
                              f"unevenly; use a multiple or a divisor of n")
    if needs_prm(c):
        prm_rows = c.prm.minibatch_prompts * prm_rows_per_prompt(c)
        if prm_rows % c.prm.micro_batch:
            raise ConfigError(f"prm.micro_batch={c.prm.micro_batch} does not divide a PRM mini-batch of {prm_rows} "
                              f"rows (prm.minibatch_prompts x {prm_rows_per_prompt(c)} rows per prompt)")
    if c.algo in ("repirl", "airl_dense") and c.data.experts_per_prompt < 1:
        raise ConfigError(f"algo={c.algo} needs expert demonstrations: set data.experts_per_prompt >= 1")
    if c.algo in ("airl_dense", "math_shepherd") and c.prm.head != "scalar":
        raise ConfigError(f"algo={c.algo} needs prm.head=scalar (its reward model is the trunk + scalar head)")
    if c.algo == "airl_dense" and c.airl.perturbed_negatives and c.data.train != "synthetic":
        raise ConfigError("airl.perturbed_negatives corrupts one step with the synthetic task's `corrupt`: it needs "
                          "data.train=synthetic (set airl.perturbed_negatives=False for other data)")
    if c.algo == "math_shepherd":
        if c.shepherd.label not in ("soft", "hard") or c.shepherd.k < 1:
            raise ConfigError(f"shepherd.label={c.shepherd.label!r}, shepherd.k={c.shepherd.k}: need soft|hard, k >= 1")
        if c.rollout.max_prompt_len + 2 * c.rollout.max_response_len > c.model.max_positions:
            raise ConfigError("algo=math_shepherd completes step prefixes (prompt + up to max_response_len tokens) "
                              "by up to max_response_len more: max_prompt_len + 2 * max_response_len must not "
                              f"exceed model.max_positions={c.model.max_positions}")
    if c.rollout.max_prompt_len + c.rollout.max_response_len > c.model.max_positions:
        raise ConfigError(f"rollout.max_prompt_len + rollout.max_response_len = "
                          f"{c.rollout.max_prompt_len + c.rollout.max_response_len} exceeds the model's "
                          f"max_positions={c.model.max_positions} (the KV cache cannot hold it)")
    if c.data.filter.enabled and not 0 <= c.data.filter.low <= c.data.filter.high <= 1:
        raise ConfigError(f"data.filter low={c.data.filter.low}, high={c.data.filter.high}: need 0 <= low <= high <= 1")
    if c.rollout.get("weights", "train") not in ("train", "replicated", "tensor"):
        raise ConfigError(f"rollout.weights={c.rollout.weights!r}: expected train, replicated or tensor")
    if c.advantage.estimator not in ("rloo", "grpo", "ppo"):
        raise ConfigError(f"advantage.estimator={c.advantage.estimator!r}: expected rloo, grpo or ppo")
    if c.algo == "ppo" and c.advantage.estimator != "ppo":
        raise ConfigError("algo=ppo needs advantage.estimator=ppo (GAE with the value head)")
    if c.rollout.temperature != 1.0 or c.rollout.top_p != 1.0:
        log.warning("rollouts sample at temperature=%s top_p=%s: logp_old, the PPO ratio and the importance "
                    "weights all use that tempered distribution", c.rollout.temperature, c.rollout.top_p)


def make_optimizer(lr: float, weight_decay: float, clip: float, warmup: int = 0, eps: float = 1e-8):
    """Global-norm clipping, then AdamW (METHOD.md: weight decay 0, clip 1.0 policy / 10 PRM)."""
    schedule = optax.linear_schedule(0.0, lr, warmup) if warmup else lr
    return optax.chain(optax.clip_by_global_norm(clip),
                       optax.adamw(schedule, b1=0.9, b2=0.999, eps=eps, weight_decay=weight_decay))


class Trainer:
    """Holds the models, optimisers, jitted steps and data of one run (see module docstring)."""

    def __init__(self, config, mesh, models: Models, tokenizer, reward_fn: Callable, train_set: list[dict],
                 abstract: bool = False):
        """abstract=True: `models` hold ShapeDtypeStructs, the state stays abstract (shapes, dtypes and
        shardings; nothing allocated) and there is no data: the jitted steps can then be lowered and
        compiled ahead of time for any mesh (tools/memory_plan.py)."""
        self.c, self.mesh, self.tokenizer, self.reward_fn = config, mesh, tokenizer, reward_fn
        self.cfg = models.cfg
        self.act = ActivationSharding(mesh)
        self.P, self.R = config.rollout.max_prompt_len, config.rollout.max_response_len
        self.n, self.k = config.rollout.n, config.data.experts_per_prompt
        self.eos_id = tokenizer.eos_token_id if tokenizer is not None else 0
        self.pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0

        def place(tree, shardings):
            if abstract:
                return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), tree, shardings)
            return distributed.put_tree(tree, shardings)

        def init_opt(opt, params, shardings):
            if abstract:
                return place(jax.eval_shape(opt.init, params), shardings)
            return jax.jit(opt.init, out_shardings=shardings)(params)

        # Parameters and optimiser states, sharded by the one rules table.
        qshard = qwen.param_shardings(self.cfg, mesh)
        hshard = tree_shardings(heads.HEAD_AXES, heads.abstract_scalar_head(self.cfg), mesh)
        self.policy_shardings = {"model": qshard, **({"value": hshard} if "value" in models.policy else {})}
        self.policy_opt = make_optimizer(config.policy.lr, config.policy.weight_decay, config.policy.clip,
                                         config.policy.warmup_steps, config.policy.adam_eps)
        abstract_policy = jax.eval_shape(lambda x: x, models.policy)
        self.policy_opt_shardings = optimizer_shardings(self.policy_opt, self.policy_shardings, abstract_policy, mesh)
        state = {"policy": place(models.policy, self.policy_shardings)}
        state["policy_opt"] = init_opt(self.policy_opt, state["policy"], self.policy_opt_shardings)
        self.state_shardings = {"policy": self.policy_shardings, "policy_opt": self.policy_opt_shardings}
        if models.prm is not None:
            self.prm_shardings = qshard if config.prm.head == "implicit" else {"trunk": qshard, "head": hshard}
            self.prm_opt = make_optimizer(config.prm.lr, config.prm.weight_decay, config.prm.clip,
                                          eps=config.prm.adam_eps)
            self.prm_opt_shardings = optimizer_shardings(self.prm_opt, self.prm_shardings,
                                                         jax.eval_shape(lambda x: x, models.prm), mesh)
            state["prm"] = place(models.prm, self.prm_shardings)
            state["prm_opt"] = init_opt(self.prm_opt, state["prm"], self.prm_opt_shardings)
            self.state_shardings.update(prm=self.prm_shardings, prm_opt=self.prm_opt_shardings)
        self.state = state
        self.ref = place(models.ref, qshard) if models.ref is not None else None

        # Data: tokenise once, up front (errors and counts surface at start-up, not mid-run).
        self.step_delim_id = -1  # PRL / Math-Shepherd: the token that ends a reasoning step
        if config.algo in ("prl", "math_shepherd") and config.steps.every <= 0:
            ids = tokenizer.encode(config.steps.delimiter, add_special_tokens=False)
            if len(ids) != 1:
                raise ConfigError(f"steps.delimiter={config.steps.delimiter!r} is {len(ids)} tokens for this "
                                  "tokenizer; use a one-token delimiter or steps.every=K (a step every K tokens)")
            self.step_delim_id = ids[0]
        self.data_report: dict[str, int] = {}
        self.train_set = [] if abstract else self._tokenize_set(train_set, "train")
        self._build_steps()
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0

    # -- data ---------------------------------------------------------------------------------------------

    def _tokenize_set(self, records: list[dict], name: str) -> list[dict]:
        c = self.c
        prompt_ids, n_long = encode_prompts(self.tokenizer, [r["prompt"] for r in records], self.P,
                                            c.data.long_prompts)
        kept = []
        n_cut = 0
        for rec, ids in zip(records, prompt_ids):
            if ids is None:
                continue
            experts = []
            if self.k and rec.get("experts"):
                ex = [rec["experts"][j % len(rec["experts"])] for j in range(self.k)]
                experts, cut = encode_responses(self.tokenizer, ex, self.R, self.eos_id)
                n_cut += cut
            kept.append({**rec, "prompt_ids": ids, "expert_ids": experts})
        self.data_report.update({f"{name}_prompts": len(records), f"{name}_long_prompts": n_long,
                                 f"{name}_prompts_skipped": len(records) - len(kept),
                                 f"{name}_expert_responses_cut": n_cut})
        if n_long:
            log.warning("%s: %d prompts longer than max_prompt_len=%d were %s", name, n_long, self.P,
                        "truncated" if c.data.long_prompts == "truncate" else "skipped")
        if not kept:
            raise ConfigError(f"{name}: no usable prompts (all longer than rollout.max_prompt_len={self.P}?)")
        if name == "train" and self.c.algo in ("repirl", "bc") and self.k and any(not r["expert_ids"] for r in kept):
            missing = sum(not r["expert_ids"] for r in kept)
            raise ConfigError(f"{name}: {missing} prompts have no expert demonstrations; algo={self.c.algo} needs them")
        return kept

    def batch_records(self, iteration: int) -> list[dict]:
        """Deterministic prompts of an iteration (1-based): epoch-wise permutations seeded by config.seed."""
        b, n = self.c.data.prompts_per_iter, len(self.train_set)
        start = (iteration - 1) * b
        out = []
        for pos in range(start, start + b):
            epoch, idx = divmod(pos, n)
            perm = np.random.RandomState(self.c.seed * 1000 + epoch).permutation(n)
            out.append(self.train_set[perm[idx]])
        return out

    def _prompt_arrays(self, records: list[dict], repeat: int):
        toks, mask = sampling.pad_prompts([r["prompt_ids"] for r in records], self.P, pad_token_id=self.pad_id)
        return np.repeat(toks, repeat, 0), np.repeat(mask, repeat, 0)

    def _put_rows(self, tree, stacked: bool = False, rules=LOGICAL_AXIS_RULES):
        """Host arrays -> global arrays whose rows (axis 0, or axis 1 of stacked micro-batches) are split over
        the data and fsdp mesh axes (replicated where they do not divide); each process sends its rows."""
        return jax.tree.map(lambda x: distributed.global_rows(x, self.rows_sharding(np.shape(x), stacked, rules)),
                            tree)

    def rows_sharding(self, shape, stacked: bool = False, rules=LOGICAL_AXIS_RULES) -> NamedSharding:
        lead = 1 if stacked else 0
        return logical_sharding(tuple("batch" if i == lead else None for i in range(len(shape))), shape, self.mesh,
                                rules)

    def _generate(self, params, toks, mask, scfg, rng=None):
        """The sampler on left-padded host prompt arrays [B, P']. With the sampler's replicated weight copy
        the rows are split over every mesh axis (data-parallel decoding, no weight traffic)."""
        return sampling.generate(params, self.cfg, *self._put_rows((toks, mask), rules=self.sample_act.rules), scfg,
                                 rng, act=self.sample_act)

    def _put_micro(self, tree, n_micro: int):
        """[rows, ...] host arrays -> [n_micro, rows / n_micro, ...] global arrays for the accumulation scan
        (each micro-batch split over the devices; per-row scalars reduced to one per micro-batch)."""
        return self._put_rows(self._scalars_per_micro(_stack_micro(tree, n_micro)), stacked=True)

    # -- jitted steps -------------------------------------------------------------------------------------

    def _build_steps(self):
        c, cfg, act = self.c, self.cfg, self.act
        chunk = c.train.logp_chunk
        shard = self.state_shardings
        algo = c.algo

        def accumulate(loss_fn, params, stacked, opt, opt_state):
            """Sum of micro-batch losses and gradients (one scan), then one clipped AdamW update."""
            def body(acc, mb):
                (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
                return (jax.tree.map(jnp.add, acc[0], g), acc[1] + loss), aux
            zeros = jax.tree.map(jnp.zeros_like, params)
            (grads, loss), aux = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32)), stacked)
            gnorm = optax.global_norm(grads)
            updates, new_opt = opt.update(grads, opt_state, params)
            new = optax.apply_updates(params, updates)
            finite = jnp.isfinite(loss) & jnp.isfinite(gnorm) & jnp.isfinite(optax.global_norm(updates))
            keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(finite, x, y), a, b)  # noqa: E731
            aux = {k_: (jnp.max(v) if k_.endswith("_max") else jnp.sum(v) if k_ in _ADDITIVE else jnp.mean(v))
                   for k_, v in aux.items()}
            return keep(new, params), keep(new_opt, opt_state), loss, gnorm, finite, aux

        # Policy.
        def policy_micro_loss(policy, mb):
            traj, extra = mb
            hidden = logprobs.sequence_hidden(policy["model"], cfg, *traj, act=act)
            m = traj.response_mask
            if algo == "bc":
                lp, _ = logprobs.policy_logprobs(policy["model"], cfg, hidden, traj.response, chunk, False)
                loss = losses.bc_loss(lp, m, extra["num_tokens"])
                return loss, {"bc_nll": loss}
            lp, ent = logprobs.policy_logprobs(policy["model"], cfg, hidden, traj.response, chunk, True)
            if algo == "kto":
                loss, aux = losses.kto_loss(lp, extra["ref_logp"], m, extra["desirable"], extra["undesirable"],
                                            beta=c.kto.beta)
                return loss * extra["row_scale"], aux
            loss, aux = losses.ppo_policy_loss(
                lp, extra["logp_old"], extra["adv"], m, ent, c.policy.clip_low, c.policy.clip_high,
                c.policy.dual_clip, c.policy.entropy_coef,
                extra["ref_logp"] if c.policy.kl_coef > 0 else None, c.policy.kl_coef, extra["num_tokens"])
            aux["logp_diff_max"] = jnp.max(jnp.abs(lp - extra["logp_old"]) * m)
            if c.advantage.estimator == "ppo":
                v = logprobs.state_values(policy["value"], hidden, m)
                vl = losses.value_loss(v, extra["old_values"], extra["returns"], m, c.ppo.value_clip,
                                       extra["num_tokens"])
                loss = loss + c.ppo.value_coef * vl
                aux["value_loss"] = vl
            return loss, aux

        def policy_update(state, stacked):
            new, new_opt, loss, gnorm, finite, aux = accumulate(policy_micro_loss, state["policy"], stacked,
                                                                self.policy_opt, state["policy_opt"])
            return {**state, "policy": new, "policy_opt": new_opt}, {"loss": loss, "grad_norm": gnorm,
                                                                     "finite": finite, **aux}

        self.policy_update = jax.jit(policy_update, donate_argnums=0, out_shardings=(shard, None))

        # The sampler's copy of the policy weights (rollout.weights), made on the devices.
        self.sample_act = ActivationSharding(self.mesh, data_parallel_rules()) if c.rollout.weights == "replicated" \
            else self.act
        if c.rollout.weights == "train":
            self.sampler_shardings = None
            self.sampler_params = lambda params: params
        else:
            abstract = qwen.abstract_params(cfg)
            if c.rollout.weights == "tensor":  # the rules table without fsdp: weights split over tensor only
                rules = tuple((k_, None if k_ == "embed" else v) for k_, v in LOGICAL_AXIS_RULES)
                target = tree_shardings(qwen.param_axes(cfg), abstract, self.mesh, rules)
            else:
                target = jax.tree.map(lambda _: NamedSharding(self.mesh, P()), abstract)
            # Cast on the shards first (elementwise, no communication), then a device-to-device reshard: a
            # single jitted cast-and-gather would hold the whole model gathered in float32 as a temporary.
            self.sampler_shardings = target
            self.sampler_params = lambda params: jax.device_put(qwen.inference_params(params, cfg), target)

        # Log-probs of a frozen model (reference) or of the rollouts under the current policy.
        self.logp = jax.jit(lambda params, traj: logprobs.response_logprobs(
            params, cfg, *traj, chunk=chunk, with_entropy=False, act=act)[0])

        def ppo_values(policy, traj):
            hidden = logprobs.sequence_hidden(policy["model"], cfg, *traj, act=act)
            return logprobs.state_values(policy["value"], hidden, traj.response_mask)
        self.values = jax.jit(ppo_values)

        if not needs_prm(c):
            return

        # PRM: token rewards (scalar head) or implicit log-ratio rewards (PRIME).
        if c.prm.head == "implicit":
            def token_rewards(prm, traj, ref_logp):
                lp = logprobs.response_logprobs(prm, cfg, *traj, chunk=chunk, with_entropy=False, act=act)[0]
                return losses.implicit_token_rewards(lp, ref_logp, traj.response_mask, c.prm.beta)
        else:
            def token_rewards(prm, traj, ref_logp):
                del ref_logp
                return logprobs.prm_token_rewards(prm, cfg, *traj, act=act)
        self.prm_rewards = jax.jit(token_rewards)

        def shift_invariant(prm):
            """L_phi is unchanged by adding a constant to every token reward, so the head's bias gets a zero
            gradient up to rounding; it is held fixed (at its zero init) rather than letting Adam turn that
            rounding into steps of ~lr whose sign depends on the reduction order (mesh, micro-batching)."""
            return {**prm, "head": {**prm["head"], "bias": jax.lax.stop_gradient(prm["head"]["bias"])}}

        def irl_micro_loss(prm, mb):
            """sum_j coef_j rbar_j: with coef = w_hat on N and -1/|P| on P this is L_phi (weights are constants)."""
            traj, extra = mb
            r = token_rewards(shift_invariant(prm), traj, None)
            _, rbar = losses.trajectory_scores(r, traj.response_mask)
            return jnp.sum(extra["coef"] * rbar), {}

        def prime_micro_loss(prm, mb):
            traj, extra = mb
            lp = logprobs.response_logprobs(prm, cfg, *traj, chunk=chunk, with_entropy=False, act=act)[0]
            loss, aux = losses.prime_implicit_prm_loss(lp, extra["ref_logp"], traj.response_mask, extra["outcome"],
                                                       c.prm.beta)
            return loss * extra["row_scale"], aux

        irl_opts = dict(log_weight_norm=c.irl.get("log_weight_norm", "none"),  # issue 11 knobs (paper defaults)
                        weight_temperature=c.irl.get("weight_temperature", 1.0), weight_cap=c.irl.get("weight_cap", 0.0))

        def irl_full_loss(prm, mb):
            """L_phi on a whole mini-batch in one pass (the weights are computed inside, without gradient)."""
            traj, extra = mb
            r = token_rewards(shift_invariant(prm), traj, None)
            out = losses.repirl_reward_loss(r, traj.response_mask, extra["logp_old"], extra["pos"], extra["neg"],
                                            extra["group"], c.irl.weight_scope, c.irl.importance_weights, **irl_opts)
            aux = {f"irl_{k_}": getattr(out, k_) for k_ in ("ess", "num_pos", "num_neg", "rbar_pos", "rbar_neg")}
            aux["irl_max_weight"] = out.max_weight
            return out.loss, aux

        def make_prm_update(fn):
            def prm_update(state, stacked):
                new, new_opt, loss, gnorm, finite, aux = accumulate(fn, state["prm"], stacked, self.prm_opt,
                                                                    state["prm_opt"])
                return {**state, "prm": new, "prm_opt": new_opt}, {"loss": loss, "grad_norm": gnorm,
                                                                   "finite": finite, **aux}
            return jax.jit(prm_update, donate_argnums=0, out_shardings=(shard, None))

        def airl_micro_loss(prm, mb):
            """Token-wise BCE of the discriminator logits (label: 1 expert, 0 policy / perturbed expert)."""
            traj, extra = mb
            z = token_rewards(prm, traj, None)
            return losses.airl_discriminator_loss(z, traj.response_mask, extra["label"], c.airl.label_smoothing,
                                                  extra["num_tokens"])

        def shepherd_micro_loss(prm, mb):
            """Per-step BCE on the step-end logits; num_tokens here counts the mini-batch's step ends."""
            traj, extra = mb
            z = token_rewards(prm, traj, None)
            return losses.step_bce_loss(z, extra["ends"], extra["labels"], extra["num_tokens"])

        prm_losses = {"airl_dense": airl_micro_loss, "math_shepherd": shepherd_micro_loss}
        self.prm_update = make_prm_update(prm_losses.get(
            algo, prime_micro_loss if c.prm.head == "implicit" else irl_micro_loss))
        self.prm_update_single_pass = make_prm_update(irl_full_loss)

        def irl_coefficients(r, mask, logp_old, pos, neg, group):
            out = losses.repirl_reward_loss(r, mask, logp_old, pos, neg, group, c.irl.weight_scope,
                                            c.irl.importance_weights, **irl_opts)
            R, _ = losses.trajectory_scores(r, mask)
            w_hat = losses.irl_weights(R, logp_old, mask, neg, group, c.irl.weight_scope, c.irl.importance_weights,
                                       **irl_opts)
            coef = jnp.where(neg > 0, w_hat, 0.0) - pos / jnp.maximum(pos.sum(), 1.0)
            return coef, out
        self.irl_coefficients = jax.jit(irl_coefficients)

    # -- one iteration ----------------------------------------------------------------------------------

    def rollouts(self, records: list[dict], rng, score: bool = False, num_samples: int | None = None,
                 temperature: float | None = None) -> dict:
        """n samples per prompt with the current policy, in chunks of rollout.prompts_per_call prompts
        (num_samples / temperature: other than rollout.n / rollout.temperature, e.g. for reranking).

        With `score`, also the outcome rewards ("outcome", "reward_stats", "reward_s"): each chunk is scored
        while the devices sample the next one (sampling is dispatched asynchronously), and each process
        scores only its own share of the rows (`distributed.process_rows`)."""
        c = self.c
        scfg = sampling.SamplingConfig(max_new_tokens=self.R,
                                       temperature=c.rollout.temperature if temperature is None else temperature,
                                       top_p=c.rollout.top_p, num_samples=num_samples or self.n,
                                       stop_token_ids=(self.eos_id,), pad_token_id=self.pad_id)
        per_call = c.rollout.prompts_per_call
        outs, texts, scores, stats, reward_s = [], [], [], {}, 0.0

        def collect(out, chunk):
            nonlocal reward_s
            out = distributed.to_host(out)
            outs.append(out)
            chunk_texts = self._decode(out)
            texts.extend(chunk_texts)
            if score:
                t = time.perf_counter()
                s_, st = self.score([r for r in chunk for _ in range(scfg.num_samples)], chunk_texts)
                scores.append(s_)
                for k_, v in st.items():
                    stats[k_] = stats.get(k_, 0) + v
                reward_s += time.perf_counter() - t

        params = self.sampler_params(self.state["policy"]["model"])
        pending = None
        for s in range(0, len(records), per_call):
            chunk = records[s:s + per_call]
            toks, mask = sampling.pad_prompts([r["prompt_ids"] for r in chunk], self.P, pad_token_id=self.pad_id)
            out = self._generate(params, toks, mask, scfg, jax.random.fold_in(rng, s))
            if pending is not None:  # the previous chunk is decoded and scored while this one samples
                collect(*pending)
            pending = (out, chunk)
        collect(*pending)
        lengths = np.concatenate([o.lengths for o in outs])
        result = {"tokens": np.concatenate([o.tokens for o in outs]), "lengths": lengths,
                  "mask": (np.arange(self.R)[None, :] < lengths[:, None]).astype(np.float32),
                  "logp": np.concatenate([o.log_probs for o in outs]),
                  "finish": np.concatenate([o.finish_reason for o in outs]), "texts": texts}
        if score:
            result.update(outcome=np.concatenate(scores).astype(np.float32), reward_stats=stats, reward_s=reward_s)
        return result

    def _decode(self, out) -> list[str]:
        """Response texts of a host-side SampleOutput (the stop token removed)."""
        texts = []
        for row in range(out.tokens.shape[0]):
            body = out.tokens[row, :out.lengths[row]]
            if out.finish_reason[row] == sampling.FINISH_STOP:
                body = body[:-1]
            texts.append(self.tokenizer.decode(body.tolist(), skip_special_tokens=True))
        return texts

    def score(self, records: list[dict], texts: list[str]):
        """Outcome rewards of (record, response) pairs: this process scores its share, then all shares are
        gathered, so every process returns the same [len(texts)] scores (and summed counters)."""
        rows = distributed.process_rows(len(texts))
        local, stats = self.reward_fn(records[rows], texts[rows])
        scores = distributed.allgather_rows(np.asarray(local, np.float32).reshape(-1), len(texts))
        return scores, distributed.allgather_stats(stats)

    def iteration(self, it: int) -> dict[str, float]:
        """Run iteration `it` (1-based) of Algorithm 1; returns its metrics."""
        c, n = self.c, self.n
        timers, metrics = {}, {}
        t0 = time.perf_counter()
        rng = jax.random.fold_in(jax.random.key(c.seed), it)
        records = self.batch_records(it)
        b = len(records)
        group = np.repeat(np.arange(b), n).astype(np.int32)

        if c.algo == "bc":
            return self._bc_iteration(records, metrics, timers, t0)

        # 1-2. rollouts and their outcome rewards (scored chunk by chunk, overlapped with sampling)
        ro = self.rollouts(records, rng, score=True)
        timers["rollout"] = time.perf_counter() - t0  # wall time of sampling and scoring together
        timers["reward"] = ro["reward_s"]  # of which spent scoring (all but the last chunk's overlapped)
        metrics["tokens_per_s"] = float(ro["mask"].sum()) / max(timers["rollout"], 1e-9)
        outcome, reward_stats = ro["outcome"], ro["reward_stats"]
        acc = outcome.reshape(b, n).mean(axis=1)
        metrics.update({"rollout_acc": float(outcome.mean()), "response_len": float(ro["lengths"].mean()),
                        "truncated_frac": float((ro["finish"] == sampling.FINISH_LENGTH).mean()),
                        **{f"reward_{k_}": v for k_, v in reward_stats.items()}})
        # 3. prompt filter (mask rows, keep shapes)
        keep = np.ones(b, np.float32)
        if c.data.filter.enabled:
            keep = ((acc >= c.data.filter.low) & (acc <= c.data.filter.high)).astype(np.float32)
        metrics["prompts_kept"] = float(keep.sum())
        row_keep = np.repeat(keep, n)
        p_toks, p_mask = self._prompt_arrays(records, n)
        rollouts = Traj(p_toks, p_mask, ro["tokens"], ro["mask"] * row_keep[:, None])

        process = np.zeros_like(ro["mask"])
        ref_logp = None
        if needs_ref(c) and c.algo != "kto":
            ref_logp = np.asarray(self._logp_in_chunks(self.ref, rollouts))
        # 4-5. PRM step, then process rewards from the updated PRM
        if needs_prm(c):
            t = time.perf_counter()
            if not c.prm.frozen:
                metrics.update(self._reward_model_step(records, rollouts, ro["logp"], outcome, keep, ref_logp, it))
            process = self._process_rewards(rollouts, ref_logp)
            metrics["process_reward_mean"] = float((process * rollouts.response_mask).sum()
                                                   / max(rollouts.response_mask.sum(), 1))
            timers["prm"] = time.perf_counter() - t
        # 6. advantages
        t = time.perf_counter()
        extra = {"logp_old": ro["logp"].astype(np.float32)}
        if ref_logp is not None:
            extra["ref_logp"] = ref_logp
        est = c.advantage.estimator
        m = rollouts.response_mask
        policy_traj, rows_per_prompt = rollouts, n
        if c.algo == "kto":
            policy_traj, extra, rows_per_prompt = self._kto_batch(records, rollouts, outcome, keep)
        elif c.algo == "airl_dense":
            policy_traj, extra, rows_per_prompt = self._airl_policy_batch(records, rollouts, ro["logp"], outcome,
                                                                          keep, process, extra)
        elif c.algo == "prl":
            extra["adv"] = np.asarray(losses.prl_advantages(outcome, ro["logp"], ref_logp, m,
                                                            self._step_ends(rollouts), group, c.prl.eta,
                                                            c.advantage.outcome_weight))
        elif est == "ppo":
            old_values = np.asarray(self._values_in_chunks(rollouts))
            rew = losses.token_rewards(outcome, process, m, c.advantage.c, c.advantage.outcome_weight)
            adv, ret = losses.gae_advantages(rew, old_values, m, c.ppo.gamma, c.ppo.lam)
            adv = losses.masked_whiten(adv, m) if c.ppo.whiten else adv
            extra.update(adv=np.asarray(adv), returns=np.asarray(ret), old_values=old_values)
        elif est == "grpo":
            extra["adv"] = np.asarray(losses.grpo_advantages(outcome, process, m, group, c.advantage.c,
                                                             c.advantage.outcome_weight))
        else:
            extra["adv"] = np.asarray(losses.rloo_advantages(outcome, process, m, group, c.advantage.c,
                                                             c.advantage.outcome_weight, c.advantage.process_mode))
        if "adv" in extra:
            a = extra["adv"][policy_traj.response_mask > 0]
            metrics.update({"adv_mean": float(a.mean()) if a.size else 0.0,
                            "adv_std": float(a.std()) if a.size else 0.0,
                            "adv_abs_max": float(np.abs(a).max()) if a.size else 0.0})
        timers["advantage"] = time.perf_counter() - t
        # 7. policy step
        t = time.perf_counter()
        metrics.update(self._policy_step(policy_traj, extra, rows_per_prompt=rows_per_prompt))
        timers["policy"] = time.perf_counter() - t
        timers["total"] = time.perf_counter() - t0
        metrics.update({f"time_{k_}": v for k_, v in timers.items()})
        return metrics

    # -- pieces of an iteration ---------------------------------------------------------------------------

    def chunk_rows(self, rows: int) -> int:
        """Rows per chunk for `rows` rows: the largest multiple (up to train.inference_batch_multiple) of the
        micro-batch unit that divides them."""
        unit = math.gcd(rows, math.gcd(self.c.policy.micro_batch, self.c.prm.micro_batch))
        return next(unit * m for m in range(self.c.train.inference_batch_multiple, 0, -1) if rows % (unit * m) == 0)

    def _chunks(self, fn, traj: Traj, *args):
        """Apply a jitted per-row function over equal row chunks (a few micro-batches each) and concatenate.
        Chunks are equal so each function compiles once."""
        rows = traj.prompt.shape[0]
        size = self.chunk_rows(rows)
        outs = []
        for s in range(0, rows, size):
            part = jax.tree.map(lambda x: x[s:s + size], (traj, *args))
            outs.append(distributed.to_host(fn(*self._put_rows(part))))
        return np.concatenate(outs)

    def _logp_in_chunks(self, params, traj):
        return self._chunks(lambda tr: self.logp(params, Traj(*tr)), traj)

    def _values_in_chunks(self, traj):
        return self._chunks(lambda tr: self.values(self.state["policy"], Traj(*tr)), traj)

    def _rewards_in_chunks(self, traj, ref_logp):
        if ref_logp is None:
            return self._chunks(lambda tr: self.prm_rewards(self.state["prm"], Traj(*tr), None), traj)
        return self._chunks(lambda tr, rl: self.prm_rewards(self.state["prm"], Traj(*tr), rl), traj, ref_logp)

    def _minibatches(self, n_rows: int, rows_per_prompt: int, minibatch_prompts: int):
        per = minibatch_prompts * rows_per_prompt
        return [np.arange(s, s + per) for s in range(0, n_rows, per)]

    def _record_step(self, out: dict, prefix: str, agg: dict):
        finite = bool(out.pop("finite"))
        if not finite:
            self.nonfinite_total += 1
            self.nonfinite_in_a_row += 1
            agg[f"{prefix}_skipped_nonfinite"] = agg.get(f"{prefix}_skipped_nonfinite", 0) + 1
            if self.nonfinite_in_a_row >= self.c.train.max_nonfinite_in_a_row:
                raise FloatingPointError(
                    f"{self.nonfinite_in_a_row} non-finite {prefix} updates in a row (each was skipped): "
                    f"lower {prefix}.lr, check the data, or raise train.max_nonfinite_in_a_row")
        else:
            self.nonfinite_in_a_row = 0
        for key, v in out.items():
            agg.setdefault(f"{prefix}_{key}", []).append(float(np.asarray(v)))

    def _updates(self, update, prefix: str, traj: Traj, extra: dict, rows_per_prompt: int, minibatch_prompts: int,
                 micro: int, agg: dict, count=None) -> dict:
        """One epoch of optimiser steps (`update`: a jitted policy or PRM update) over mini-batches of
        `minibatch_prompts` prompts. Each micro-batch gets `num_tokens`, the mini-batch's normaliser (its
        response tokens, or the sum of the per-row `count`, e.g. step ends), and `row_scale` = 1 / micro-batches."""
        for idx in self._minibatches(traj.prompt.shape[0], rows_per_prompt, minibatch_prompts):
            part_traj = Traj(*(x[idx] for x in traj))
            part = {k_: v[idx] for k_, v in extra.items()}
            total = part_traj.response_mask.sum() if count is None else count[idx].sum()
            part["num_tokens"] = np.full((len(idx),), np.float32(max(total, 1.0)), np.float32)
            part["row_scale"] = np.full((len(idx),), 1.0 / (len(idx) // micro), np.float32)
            self.state, out = update(self.state, self._put_micro((part_traj, part), len(idx) // micro))
            out = distributed.to_host(out)
            if "logp_diff_max" in out:  # meaningful before the first update only (later ones see a new policy)
                diff = out.pop("logp_diff_max")
                agg.setdefault("logp_diff_sampler_vs_trainer", float(np.asarray(diff)))
            self._record_step(out, prefix, agg)
        return agg

    @staticmethod
    def _means(agg: dict) -> dict:
        return {k_: (float(np.mean(v)) if isinstance(v, list) else v) for k_, v in agg.items()}

    def _policy_step(self, traj: Traj, extra: dict, rows_per_prompt: int) -> dict:
        c = self.c
        agg: dict = {}
        for _ in range(c.policy.epochs):
            self._updates(self.policy_update, "policy", traj, extra, rows_per_prompt, c.policy.minibatch_prompts,
                          c.policy.micro_batch, agg)
        return self._means(agg)

    @staticmethod
    def _scalars_per_micro(stacked):
        """num_tokens / row_scale are per-row copies; the losses want one scalar per micro-batch."""
        traj, extra = stacked
        extra = dict(extra)
        for key in ("num_tokens", "row_scale"):
            if key in extra:
                extra[key] = extra[key][:, 0]
        return traj, extra

    def _reward_model_step(self, records, rollouts: Traj, logp_old, outcome, keep, ref_logp, it: int) -> dict:
        """One epoch of the algorithm's reward-model updates (step 4)."""
        if self.c.algo == "airl_dense":
            return self._airl_step(records, rollouts, keep, it)
        if self.c.algo == "math_shepherd":
            rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.c.seed), it), 1)
            return self._shepherd_step(records, rollouts, outcome, rng)
        return self._prm_step(records, rollouts, logp_old, outcome, keep, ref_logp)

    def _process_rewards(self, rollouts: Traj, ref_logp):
        """Process rewards of the rollouts from the (updated) reward model, [B, R]: token rewards (rePIRL,
        PRIME; AIRL: the discriminator logits), or for Math-Shepherd the step scores sigmoid(z) at step ends."""
        r = self._rewards_in_chunks(rollouts, ref_logp)
        if self.c.algo == "math_shepherd":
            r = (1.0 / (1.0 + np.exp(-r))) * self._step_ends(rollouts)
        return r

    def _step_ends(self, traj: Traj):
        """`losses.step_end_mask` of response rows (steps.delimiter or steps.every), [B, R] float32."""
        return np.asarray(losses.step_end_mask(traj.response, traj.response_mask, self.step_delim_id,
                                               self.c.steps.every))

    def _prm_step(self, records, rollouts: Traj, logp_old, outcome, keep, ref_logp) -> dict:
        """One epoch over PRM mini-batches (rePIRL Eq. 3-5, or PRIME's implicit-PRM cross-entropy)."""
        c, n, k = self.c, self.n, self.k
        b = len(records)
        agg: dict = {}
        use_experts = c.prm.head == "scalar" and c.algo == "repirl"
        per_prompt = n + (k if use_experts else 0)
        # Rows grouped by prompt: its n rollouts, then its k demonstrations.
        if use_experts:
            traj, cat = self._with_experts(records, rollouts, keep)
            is_roll = cat(np.ones(b * n), np.zeros(b * k))
            lp_old = cat(logp_old, np.zeros((b * k, self.R), np.float32))
            out_all = cat(outcome, np.ones(b * k, np.float32))
        else:
            traj, is_roll, lp_old, out_all = rollouts, np.ones(b * n), logp_old, outcome
        group = np.repeat(np.arange(b), per_prompt).astype(np.int32)
        row_keep = np.repeat(keep, per_prompt)
        correct = out_all >= 1.0
        pos = (((1 - is_roll) > 0) | (is_roll.astype(bool) & correct & bool(c.irl.pseudo_expert))) * row_keep
        neg = (is_roll.astype(bool) & ~correct) * row_keep
        micro = c.prm.micro_batch
        epochs = c.irl.get("prm_epochs", 1) if c.algo == "repirl" else 1  # issue 11 knob (paper: 1)
        for idx in [i for _ in range(epochs) for i in self._minibatches(traj.prompt.shape[0], per_prompt,
                                                                         c.prm.minibatch_prompts)]:
            part = Traj(*(x[idx] for x in traj))
            local_group = group[idx] - group[idx].min()  # segment ids must index this mini-batch's rows
            n_micro = len(idx) // micro
            if c.prm.head == "implicit":
                extra = {"ref_logp": ref_logp[idx], "outcome": out_all[idx].astype(np.float32),
                         "row_scale": np.full((len(idx),), 1.0 / n_micro, np.float32)}
            else:
                if pos[idx].sum() + neg[idx].sum() == 0:
                    agg["prm_skipped_empty"] = agg.get("prm_skipped_empty", 0) + 1
                    continue
                if n_micro == 1:  # one pass: weights and loss from the same forward
                    extra = {"logp_old": lp_old[idx].astype(np.float32), "pos": pos[idx].astype(np.float32),
                             "neg": neg[idx].astype(np.float32), "group": local_group}
                    stacked = self._put_micro((part, extra), 1)
                    self.state, out = self.prm_update_single_pass(self.state, stacked)
                    out = distributed.to_host(out)
                    for key in [k_ for k_ in out if k_.startswith("irl_")]:
                        agg.setdefault(key, []).append(float(np.asarray(out.pop(key))))
                    agg.setdefault("irl_loss", []).append(float(np.asarray(out["loss"])))
                    self._record_step(out, "prm", agg)
                    continue
                r = self._rewards_in_chunks(part, None)
                inputs = (r, part.response_mask, lp_old[idx], pos[idx].astype(np.float32),
                          neg[idx].astype(np.float32), local_group)
                coef, irl = distributed.to_host(self.irl_coefficients(*self._put_rows(inputs)))
                for key in ("ess", "num_pos", "num_neg", "rbar_pos", "rbar_neg", "max_weight"):
                    agg.setdefault(f"irl_{key}", []).append(float(getattr(irl, key)))
                agg.setdefault("irl_loss", []).append(float(irl.loss))
                extra = {"coef": np.asarray(coef)}
            stacked = self._put_micro((part, extra), n_micro)
            self.state, out = self.prm_update(self.state, stacked)
            out = distributed.to_host(out)
            self._record_step(out, "prm", agg)
        return self._means(agg)

    def _with_experts(self, records, rollouts: Traj, keep, extra_blocks=()):
        """Rollouts and demonstrations grouped by prompt (its n rollouts, then its k demonstrations, then k
        responses of each further block, e.g. perturbed demonstrations: lists of b * k token lists), and
        `cat(rollout_rows, expert_rows, *block_rows)` that puts any per-row array into the same order."""
        n, k, b = self.n, self.k, len(records)
        blocks = [[ids for r in records for ids in r["expert_ids"]], *extra_blocks]
        padded = [pad_right(ids, self.R, self.pad_id) for ids in blocks]
        pt, pm = self._prompt_arrays(records, k)
        order = np.concatenate([np.concatenate([np.arange(i * n, (i + 1) * n)] + [
            b * n + j * b * k + np.arange(i * k, (i + 1) * k) for j in range(len(blocks))]) for i in range(b)])
        cat = lambda *arrays: np.concatenate(arrays)[order]  # noqa: E731
        row_keep = np.repeat(keep, k)[:, None]
        traj = Traj(cat(rollouts.prompt, *[pt] * len(blocks)), cat(rollouts.prompt_mask, *[pm] * len(blocks)),
                    cat(rollouts.response, *[t for t, _ in padded]),
                    cat(rollouts.response_mask, *[mk * row_keep for _, mk in padded]))
        return traj, cat

    # -- dense reasoning reward by adversarial IRL (airl_dense) --------------------------------------

    def _airl_step(self, records, rollouts: Traj, keep, it: int) -> dict:
        """One discriminator epoch: per prompt its n rollouts (label 0), its k demonstrations (label 1) and,
        with airl.perturbed_negatives, the k demonstrations with one corrupted step each (label 0)."""
        c, n, k, b = self.c, self.n, self.k, len(records)
        blocks = [self._perturbed_expert_ids(records, it)] if c.airl.perturbed_negatives else []
        traj, cat = self._with_experts(records, rollouts, keep, blocks)
        label = cat(np.zeros(b * n), np.ones(b * k), *[np.zeros(b * k)] * len(blocks)).astype(np.float32)
        agg = self._updates(self.prm_update, "prm", traj, {"label": label}, n + k * (1 + len(blocks)),
                            c.prm.minibatch_prompts, c.prm.micro_batch, {})
        return self._means(agg)

    def _perturbed_expert_ids(self, records, it: int) -> list:
        """Each prompt's k demonstrations with one step's result changed (synthetic.corrupt), token ids."""
        from repirl_jax.data import synthetic
        rng = np.random.default_rng([self.c.seed, it])
        texts = [synthetic.corrupt(r["experts"][j % len(r["experts"])], rng, modulus=self.c.data.synthetic.modulus)
                 for r in records for j in range(self.k)]
        return encode_responses(self.tokenizer, texts, self.R, self.eos_id)[0]

    def _airl_policy_batch(self, records, rollouts: Traj, logp_old, outcome, keep, logits, extra: dict):
        """Rows and advantages of the AIRL policy step: `losses.airl_dense_advantages` of the discriminator
        logits over each prompt's group, the n rollouts or (airl.experts_in_group) the rollouts and the k
        demonstrations (outcome 1; their logp_old are the current policy's, so their PPO ratio starts at 1)."""
        c, n, k, b = self.c, self.n, self.k, len(records)
        traj, per_prompt, o = rollouts, n, outcome
        if c.airl.experts_in_group:
            traj, cat = self._with_experts(records, rollouts, keep)
            is_expert = cat(np.zeros(b * n), np.ones(b * k))[:, None] > 0
            current = self._logp_in_chunks(self.state["policy"]["model"], traj)
            logp_old = np.where(is_expert, current, cat(logp_old, np.zeros((b * k, self.R), np.float32)))
            o = cat(outcome, np.ones(b * k, np.float32))
            logits = self._rewards_in_chunks(traj, None)
            per_prompt = n + k
            if "ref_logp" in extra:  # KL to the reference (policy.kl_coef > 0) on every row of the group
                extra["ref_logp"] = self._logp_in_chunks(self.ref, traj)
        group = np.repeat(np.arange(b), per_prompt).astype(np.int32)
        adv = losses.airl_dense_advantages(o, logits, traj.response_mask, group, c.advantage.c,
                                           c.advantage.outcome_weight, c.airl.reward_min, c.airl.reward_max,
                                           c.airl.gamma, c.airl.std_eps)
        return traj, {**extra, "logp_old": np.asarray(logp_old, np.float32), "adv": np.asarray(adv)}, per_prompt

    # -- Math-Shepherd ---------------------------------------------------------------------------------

    def _shepherd_step(self, records, rollouts: Traj, outcome, rng) -> dict:
        """Label every step of the (kept) rollouts by completions, then one PRM epoch of per-step BCE."""
        c = self.c
        ends = self._step_ends(rollouts)
        labels, stats = self._shepherd_labels(records, rollouts, ends, outcome, rng)
        agg = self._updates(self.prm_update, "prm", rollouts, {"ends": ends, "labels": labels}, self.n,
                            c.prm.minibatch_prompts, c.prm.micro_batch, {}, count=ends.sum(axis=1))
        return {**self._means(agg), **stats}

    def _shepherd_labels(self, records, rollouts: Traj, ends, outcome, rng):
        """Step labels [B, R] at the step ends: for each step but the last, k completions by the current
        policy from the prefix (prompt + response up to and including the step end), scored by the outcome
        reward (the whole response kept within rollout.max_response_len), labelled by
        `losses.shepherd_labels` (shepherd.label); the last step's label is the rollout's own outcome.
        Also returns the cost: prefixes, sampled tokens, seconds."""
        c, n, kk, per_call = self.c, self.n, self.c.shepherd.k, self.c.shepherd.prefixes_per_call
        t0 = time.perf_counter()
        labels = ends * np.asarray(outcome, np.float32)[:, None]
        prefixes = [(row, int(t)) for row in range(ends.shape[0]) for t in np.flatnonzero(ends[row])[:-1]]
        scfg = sampling.SamplingConfig(max_new_tokens=self.R, temperature=c.rollout.temperature,
                                       top_p=c.rollout.top_p, num_samples=kk, stop_token_ids=(self.eos_id,),
                                       pad_token_id=self.pad_id)
        correct, sampled = np.zeros((len(prefixes), kk), np.float32), 0
        params = self.sampler_params(self.state["policy"]["model"])
        for s in range(0, len(prefixes), per_call):
            chunk = prefixes[s:s + per_call]
            ids = [list(records[row // n]["prompt_ids"]) + rollouts.response[row, :t + 1].tolist() for row, t in chunk]
            ids += [ids[0]] * (per_call - len(chunk))  # one shape for every call
            toks, mask = sampling.pad_prompts(ids, self.P + self.R, pad_token_id=self.pad_id)
            out = distributed.to_host(self._generate(params, toks, mask, scfg, jax.random.fold_in(rng, s)))
            texts, recs = [], []
            for j, (row, t) in enumerate(chunk):
                for q in range(kk):
                    i = j * kk + q
                    sampled += int(out.lengths[i])
                    kept = min(int(out.lengths[i]), self.R - t - 1)  # the whole response stays within R
                    body = rollouts.response[row, :t + 1].tolist() + out.tokens[i, :kept].tolist()
                    texts.append(self.tokenizer.decode(body, skip_special_tokens=True))
                    recs.append(records[row // n])
            scores, _ = self.score(recs, texts)
            correct[s:s + len(chunk)] = (np.asarray(scores, np.float32) >= 1.0).reshape(len(chunk), kk)
        step_labels = losses.shepherd_labels(correct, c.shepherd.label)
        for (row, t), v in zip(prefixes, step_labels):
            labels[row, t] = v
        stats = {"shepherd_prefixes": float(len(prefixes)), "shepherd_sampled_tokens": float(sampled),
                 "shepherd_label_mean": float(step_labels.mean()) if len(prefixes) else 0.0,
                 "time_shepherd_completions": time.perf_counter() - t0}
        return labels, stats

    def _kto_batch(self, records, rollouts: Traj, outcome, keep):
        """KTO rows per prompt: its n rollouts (correct: desirable, failed: undesirable) and its k expert
        demonstrations (desirable), METHOD.md section 4; with reference log-probs of every row."""
        n, k, b = self.n, self.k, len(records)
        e_ids = [ids for r in records for ids in r["expert_ids"]]
        if k and e_ids:
            traj, cat = self._with_experts(records, rollouts, keep)
            desirable = cat((outcome >= 1.0).astype(np.float32), np.ones(b * k, np.float32))
            undesirable = cat((outcome < 1.0).astype(np.float32), np.zeros(b * k, np.float32))
            per_prompt = n + k
        else:
            traj, per_prompt = rollouts, n
            desirable, undesirable = (outcome >= 1.0).astype(np.float32), (outcome < 1.0).astype(np.float32)
        row_keep = np.repeat(keep, per_prompt)
        extra = {"desirable": desirable * row_keep, "undesirable": undesirable * row_keep,
                 "ref_logp": np.asarray(self._logp_in_chunks(self.ref, traj))}
        return traj, extra, per_prompt

    def _bc_iteration(self, records, metrics, timers, t0) -> dict:
        k = max(self.k, 1)
        ids = [r["expert_ids"][j] for r in records for j in range(k)]
        toks, mask = pad_right(ids, self.R, self.pad_id)
        pt, pm = self._prompt_arrays(records, k)
        metrics.update(self._policy_step(Traj(pt, pm, toks, mask), {}, rows_per_prompt=k))
        timers["policy"] = time.perf_counter() - t0
        metrics.update({f"time_{k_}": v for k_, v in timers.items()})
        return metrics

    # -- evaluation ---------------------------------------------------------------------------------------

    def evaluate(self, records: list[dict], batch: int) -> dict[str, float]:
        """Greedy accuracy of the current policy on `records` (already tokenised by `_tokenize_set`)."""
        scfg = sampling.SamplingConfig(max_new_tokens=self.R, greedy=True, stop_token_ids=(self.eos_id,),
                                       pad_token_id=self.pad_id)
        scores = []
        params = self.sampler_params(self.state["policy"]["model"])
        for s in range(0, len(records), batch):
            part = records[s:s + batch]
            toks, mask = sampling.pad_prompts([r["prompt_ids"] for r in part], self.P, batch, self.pad_id)
            out = distributed.to_host(self._generate(params, toks, mask, scfg))
            s_, _ = self.score(part, self._decode(out)[:len(part)])
            scores += list(s_)
        return {"accuracy": float(np.mean(scores)) if scores else 0.0, "n": len(scores)}
