"""Algorithm 1 of rePIRL and every method that shares its loop: state, shardings, the update engine, the loop.

One iteration, in METHOD.md's order (what a method changes is its `algorithms.Algorithm`'s hooks):
  1. rollouts: n samples per prompt from the current policy (the sampler's log-probs are logp_old)
  2. outcome rewards (answer checking / tests / the synthetic checker)
  3. prompt filter: prompts whose rollout accuracy is outside [low, high] are masked out (shapes stay fixed)
  4. reward-model step (`reward_model_step`: rePIRL Eq. 3-5, PRIME's cross-entropy, AIRL, Math-Shepherd)
  5. process rewards of the rollouts from the UPDATED reward model (`process_rewards`)
  6. the policy batch and its advantages (`policy_batch`, estimators in `algorithms/advantages.py`)
  7. policy step (`policy_loss`: PPO-clipped surrogate, entropy bonus, optional KL; BC / KTO their own)
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
from typing import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding

from repirl_jax import algorithms
from repirl_jax.algorithms import Batch, ConfigError, losses, validate  # noqa: F401  (train.validate, ...)
from repirl_jax.algorithms.advantages import AdvantageParams, masked_stats
from repirl_jax.algorithms.base import means
from repirl_jax.algorithms.batches import Traj, pad_right, stack_micro, take, tokenize_set  # noqa: F401
from repirl_jax.generation import rollout, sampling
from repirl_jax.models import heads, logprobs, lora, prm_heads, qwen
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime import distributed
from repirl_jax.runtime.sharding import (
    LOGICAL_AXIS_RULES,
    ActivationSharding,
    logical_sharding,
    optimizer_shardings,
    tree_shardings,
)
from repirl_jax.training.engine import Engine
from repirl_jax.training.update_step import make_optimizer, update_step

log = logging.getLogger(__name__)

@dataclasses.dataclass
class Models:
    cfg: QwenConfig  # the policy's (with its LoRA settings, if any)
    policy: dict  # trainable policy tree {"model": qwen params or a LoRA adapter[, "value": head]}
    prm: dict | None  # {"trunk", "head"} (scalar) or qwen params (implicit, likelihood); None when unused
    ref: dict | None  # frozen reference qwen params, when a loss needs one (under a LoRA policy: its base)
    prm_cfg: QwenConfig | None = None  # the PRM's config when it differs from cfg (its own LoRA settings)
    # Frozen bases of LoRA models (then policy["model"] / the PRM's trunk hold only the adapter): None = that
    # model trains every weight. `prm_base is base` (the same arrays) is held once; so is `ref is base`.
    base: dict | None = None
    prm_base: dict | None = None


def needs_prm(config) -> bool:
    return algorithms.get(config.algo).needs_prm


def needs_ref(config) -> bool:
    return algorithms.get(config.algo).needs_ref(config)


class Trainer:
    """Holds the models, optimisers, jitted steps and data of one run (see module docstring)."""

    def __init__(self, config, mesh, models: Models, tokenizer, reward_fn: Callable, train_set: list[dict],
                 abstract: bool = False):
        """abstract=True: `models` hold ShapeDtypeStructs, the state stays abstract (shapes, dtypes and
        shardings; nothing allocated) and there is no data: the jitted steps can then be lowered and
        compiled ahead of time for any mesh (tools/memory_plan.py)."""
        self.config, self.mesh, self.tokenizer, self.reward_fn = config, mesh, tokenizer, reward_fn
        self.algo = algorithms.get(config.algo)
        self.cfg, self.base_cfg = models.cfg, models.cfg.without_lora()  # base_cfg: the sampler's, the reference's
        self.prm_cfg = models.prm_cfg or models.cfg
        self.act = ActivationSharding(mesh)
        self.P, self.R = config.rollout.max_prompt_len, config.rollout.max_response_len
        self.n, self.num_experts = config.rollout.n, config.data.experts_per_prompt
        chat = rollout.is_chat(config.data.prompt_format)
        self.end_id = rollout.end_token_id(tokenizer, chat)  # ends every demonstration
        self.stop_ids = rollout.stop_token_ids(self.cfg, tokenizer, chat) if tokenizer is not None else (0,)
        self.pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
        self.advantage_params = AdvantageParams.from_config(config)

        def place(tree, shardings):
            if abstract:
                return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), tree, shardings)
            return distributed.put_tree(tree, shardings)

        def init_opt(opt, params, shardings):
            if abstract:
                return place(jax.eval_shape(opt.init, params), shardings)
            return jax.jit(opt.init, out_shardings=shardings)(params)

        # Parameters and optimiser states, sharded by the one rules table (an adapter like the weight it modifies).
        # A LoRA model's frozen base is placed once and shared (policy, PRM, reference); `frozen` mirrors the
        # trainable trees so that `lora.join(frozen[name], state[name])` is the tree the model reads.
        qshard = qwen.param_shardings(self.cfg, mesh)
        base_shard = lora.split(qshard)[0]
        hshard = tree_shardings(heads.HEAD_AXES, heads.abstract_scalar_head(self.cfg), mesh)
        def place_base(tree):  # the policy's base is placed once: the PRM and the reference may be the same arrays
            return None if tree is None else base if tree is models.base else place(tree, base_shard)
        base = None if models.base is None else place(models.base, base_shard)
        prm_base = place_base(models.prm_base)
        self.prm_head = prm_heads.get(config)
        self.frozen = {"policy": None if base is None else {"model": base}, "prm": self.prm_head.frozen(prm_base)}
        self.policy_shardings = {"model": lora.split(qshard)[1] if base is not None else qshard,
                                 **({"value": hshard} if "value" in models.policy else {})}
        self.policy_opt = make_optimizer(config.policy.lr, config.policy.weight_decay, config.policy.clip,
                                         config.policy.warmup_steps, config.policy.adam_eps)
        abstract_policy = jax.eval_shape(lambda x: x, models.policy)
        self.policy_opt_shardings = optimizer_shardings(self.policy_opt, self.policy_shardings, abstract_policy, mesh)
        state = {"policy": place(models.policy, self.policy_shardings)}
        state["policy_opt"] = init_opt(self.policy_opt, state["policy"], self.policy_opt_shardings)
        self.state_shardings = {"policy": self.policy_shardings, "policy_opt": self.policy_opt_shardings}
        if models.prm is not None:
            pshard = qwen.param_shardings(self.prm_cfg, mesh)
            pshard = lora.split(pshard)[1] if prm_base is not None else pshard
            self.prm_shardings = self.prm_head.shardings(pshard, hshard)
            self.prm_opt = make_optimizer(config.prm.lr, config.prm.weight_decay, config.prm.clip,
                                          eps=config.prm.adam_eps)
            self.prm_opt_shardings = optimizer_shardings(self.prm_opt, self.prm_shardings,
                                                         jax.eval_shape(lambda x: x, models.prm), mesh)
            state["prm"] = place(models.prm, self.prm_shardings)
            state["prm_opt"] = init_opt(self.prm_opt, state["prm"], self.prm_opt_shardings)
            self.state_shardings.update(prm=self.prm_shardings, prm_opt=self.prm_opt_shardings)
        self.state = state
        self.ref = place_base(models.ref)

        # Data: tokenise once, up front (errors and counts surface at start-up, not mid-run).
        self.step_delim_id = -1  # the token that ends a reasoning step (methods that read steps)
        if self.algo.uses_steps and config.steps.every <= 0:
            ids = tokenizer.encode(config.steps.delimiter, add_special_tokens=False)
            if len(ids) != 1:
                raise ConfigError(f"steps.delimiter={config.steps.delimiter!r} is {len(ids)} tokens for this "
                                  "tokenizer; use a one-token delimiter or steps.every=K (a step every K tokens)")
            self.step_delim_id = ids[0]
        self.data_report: dict[str, int] = {}
        self.train_set = [] if abstract else self.tokenize_set(train_set, "train")
        self._build_steps()
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.last_batch: Batch | None = None  # the last iteration's scored rollouts (early_signal reads it)
        self.engine = Engine(self)  # all that the algorithm's hooks see of this trainer

    # -- data ---------------------------------------------------------------------------------------------

    def tokenize_set(self, records: list[dict], name: str) -> list[dict]:
        """`batches.tokenize_set` with this run's lengths, end token and checks; counts go to data_report."""
        return tokenize_set(self.tokenizer, records, name, self.P, self.R, self.num_experts, self.end_id,
                            self.config.data.long_prompts, self.config.algo if self.algo.experts_in_data else None,
                            self.data_report)

    def batch_records(self, iteration: int) -> list[dict]:
        """Deterministic prompts of an iteration (1-based): epoch-wise permutations seeded by config.seed."""
        per_iter, n = self.config.data.prompts_per_iter, len(self.train_set)
        out = []
        for pos in range((iteration - 1) * per_iter, iteration * per_iter):
            epoch, idx = divmod(pos, n)
            out.append(self.train_set[np.random.RandomState(self.config.seed * 1000 + epoch).permutation(n)[idx]])
        return out

    def prompt_arrays(self, records: list[dict], repeat: int):
        toks, mask = sampling.pad_prompts([r["prompt_ids"] for r in records], self.P, pad_token_id=self.pad_id)
        return np.repeat(toks, repeat, 0), np.repeat(mask, repeat, 0)

    def full(self, name: str):
        """state[name] as its model reads it: a LoRA adapter joined to its frozen base (no copies)."""
        return lora.join(self.frozen[name], self.state[name])

    def model_params(self):
        """The policy's Qwen parameters (base + adapter under LoRA), read with `self.cfg`."""
        return self.full("policy")["model"]

    def put_rows(self, tree, stacked: bool = False, rules=LOGICAL_AXIS_RULES):
        """Host arrays -> global arrays whose rows (axis 0, or axis 1 of stacked micro-batches) are split over
        the data and fsdp mesh axes (replicated where they do not divide); each process sends its rows."""
        return jax.tree.map(lambda x: distributed.global_rows(x, self.rows_sharding(np.shape(x), stacked, rules)),
                            tree)

    def rows_sharding(self, shape, stacked: bool = False, rules=LOGICAL_AXIS_RULES) -> NamedSharding:
        lead = 1 if stacked else 0
        return logical_sharding(tuple("batch" if i == lead else None for i in range(len(shape))), shape, self.mesh,
                                rules)

    def put_micro(self, tree, n_micro: int):
        """[rows, ...] host arrays -> [n_micro, rows / n_micro, ...] global arrays for the accumulation scan
        (each micro-batch split over the devices; num_tokens / row_scale reduced to one per micro-batch)."""
        traj, extra = stack_micro(tree, n_micro)
        extra = {k_: v[:, 0] if k_ in ("num_tokens", "row_scale") else v for k_, v in extra.items()}
        return self.put_rows((traj, extra), stacked=True)

    # -- jitted steps -------------------------------------------------------------------------------------

    def _build_steps(self):
        config, cfg, act, shard = self.config, self.cfg, self.act, self.state_shardings
        chunk = config.train.logp_chunk

        def make_update(loss_fn, name: str, opt):  # see update_step; a LoRA model's base comes from self.frozen
            return update_step(loss_fn, name, opt, shard, self.frozen[name])

        self.policy_update = make_update(self.algo.policy_loss(config, cfg, act), "policy", self.policy_opt)

        # The sampler's copy of the policy weights (rollout.weights), made on the devices; adapters merged in.
        self.sample_act, self.sampler_shardings, copy = rollout.sampler_weights(self.base_cfg, self.mesh,
                                                                                config.rollout.weights)
        merge = jax.jit(lora.merge, static_argnums=1)
        self.sampler_params = lambda model: copy(merge(model, cfg) if lora.has_adapter(model) else model)
        # Prompts padded and sampled in one place; with the replicated weight copy the rows are split over every
        # mesh axis (data-parallel decoding, no weight traffic).
        self.generator = rollout.Generator(self.base_cfg, self.P, self.pad_id, act=self.sample_act,
                                           put=lambda t: self.put_rows(t, rules=self.sample_act.rules),
                                           rows=config.rollout.continuous_rows)

        # Log-probs of a frozen model (reference) or of the rollouts under the current policy; PPO values. A tree
        # without adapters (the reference of a LoRA run) is read with the base config.
        self.logp = jax.jit(lambda params, traj: logprobs.response_logprobs(
            params, lora.config_for(params, cfg), *traj, chunk=chunk, with_entropy=False, act=act)[0])
        self.values = jax.jit(lambda policy, traj: logprobs.state_values(
            policy["value"], logprobs.sequence_hidden(policy["model"], cfg, *traj, act=act), traj.response_mask))

        self.prm_updates: dict = {}
        if not self.algo.needs_prm:
            return
        pcfg, head = self.prm_cfg, self.prm_head

        def token_rewards(prm, traj, ref_logp):
            return head.token_rewards(prm, pcfg, traj, ref_logp, chunk, act)
        self.prm_rewards = jax.jit(token_rewards)
        self.prm_updates = {name: make_update(fn, "prm", self.prm_opt)
                            for name, fn in self.algo.prm_losses(config, pcfg, act, token_rewards).items()}

    # -- generation and scoring ----------------------------------------------------------------------------

    def sampling_config(self, num_samples: int | None = None, temperature: float | None = None,
                        greedy: bool = False) -> sampling.SamplingConfig:
        """Sampling settings of rollouts (rollout.*), completions and evaluation, with the one stop rule."""
        config = self.config
        return sampling.SamplingConfig(max_new_tokens=self.R, greedy=greedy, top_p=config.rollout.top_p,
                                       temperature=config.rollout.temperature if temperature is None else temperature,
                                       num_samples=num_samples or self.n, stop_token_ids=self.stop_ids,
                                       pad_token_id=self.pad_id)

    def rollouts(self, records: list[dict], rng, score: bool = False, num_samples: int | None = None,
                 temperature: float | None = None) -> dict:
        """n samples per prompt with the current policy, in chunks of rollout.prompts_per_call prompts (one
        queue with rollout.continuous_rows; num_samples / temperature: other than rollout.n / temperature).

        With `score`, also the outcome rewards ("outcome", "reward_stats", "reward_s"): each chunk is scored
        while the devices sample the next one (sampling is dispatched asynchronously), and each process
        scores only its own share of the rows (`distributed.process_rows`)."""
        scfg = self.sampling_config(num_samples, temperature)
        outs, texts, scores, stats, reward_s = [], [], [], {}, 0.0

        def collect(out, chunk):
            nonlocal reward_s
            outs.append(distributed.to_host(out))
            chunk_texts = rollout.decode(self.tokenizer, outs[-1])
            texts.extend(chunk_texts)
            if score:
                t = time.perf_counter()
                s_, st = self.score([r for r in chunk for _ in range(scfg.num_samples)], chunk_texts)
                scores.append(s_)
                for k_, v in st.items():
                    stats[k_] = stats.get(k_, 0) + v
                reward_s += time.perf_counter() - t

        params, pending = self.sampler_params(self.model_params()), None
        ro = self.config.rollout
        per_call = len(records) if ro.continuous_rows else ro.prompts_per_call  # continuous: 1 queue
        for s in range(0, len(records), per_call):
            chunk = records[s:s + per_call]
            out = self.generator(params, [r["prompt_ids"] for r in chunk], scfg, jax.random.fold_in(rng, s))
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

    def score(self, records: list[dict], texts: list[str]):
        """Outcome rewards of (record, response) pairs: this process scores its share, then all shares are
        gathered, so every process returns the same [len(texts)] scores (and summed counters)."""
        rows = distributed.process_rows(len(texts))
        local, stats = self.reward_fn(records[rows], texts[rows])
        scores = distributed.allgather_rows(np.asarray(local, np.float32).reshape(-1), len(texts))
        return scores, distributed.allgather_stats(stats)

    def evaluate(self, records: list[dict], batch: int) -> dict[str, float]:
        """Greedy accuracy of the current policy on `records` (already tokenised by `tokenize_set`), and each
        record's score."""
        scores, params, scfg = [], self.sampler_params(self.model_params()), self.sampling_config(1, greedy=True)
        for s in range(0, len(records), batch):
            part = records[s:s + batch]
            out = distributed.to_host(self.generator(params, [r["prompt_ids"] for r in part], scfg, None, batch))
            scores += list(self.score(part, rollout.decode(self.tokenizer, out)[:len(part)])[0])
        return {"accuracy": float(np.mean(scores)) if scores else 0.0, "n": len(scores), "scores": scores}

    # -- one iteration ----------------------------------------------------------------------------------

    def iteration(self, it: int) -> dict[str, float]:
        """Run iteration `it` (1-based) of Algorithm 1; returns its metrics."""
        config, algo = self.config, self.algo
        timers, metrics = {}, {}
        t0 = time.perf_counter()
        records = self.batch_records(it)
        if not algo.uses_rollouts:
            traj, extra, per_prompt = algo.offline_batch(self.engine, records)
            metrics.update(self.policy_step(traj, extra, per_prompt))
            return {**metrics, "time_policy": time.perf_counter() - t0}
        batch, tokens, timers["reward"] = self._scored_batch(records, it, metrics)  # of which spent scoring
        timers["rollout"] = time.perf_counter() - t0  # wall time of sampling and scoring together
        metrics["tokens_per_s"] = tokens / max(timers["rollout"], 1e-9)
        batch.process = np.zeros_like(batch.rollouts.response_mask)
        if algo.needs_prm:  # 4-5. reward-model step, then process rewards from the updated model
            t = time.perf_counter()
            if not config.prm.frozen:
                metrics.update(algo.reward_model_step(self.engine, batch))
            batch.process = algo.process_rewards(self.engine, batch)  # on the device
            stats = distributed.to_host(masked_stats(batch.process, batch.rollouts.response_mask))
            metrics["process_reward_mean"] = float(stats[0])
            timers["prm"] = time.perf_counter() - t
        t = time.perf_counter()  # 6. the policy batch and its advantages
        traj, extra, per_prompt = algo.policy_batch(self.engine, batch)
        if "adv" in extra:
            stats = distributed.to_host(masked_stats(extra["adv"], traj.response_mask))
            metrics.update(adv_mean=float(stats[0]), adv_std=float(stats[1]), adv_abs_max=float(stats[2]))
        timers["advantage"] = time.perf_counter() - t
        t = time.perf_counter()  # 7. policy step
        metrics.update(self.policy_step(traj, extra, per_prompt))
        self.last_batch = batch
        timers["policy"] = time.perf_counter() - t
        timers["total"] = time.perf_counter() - t0
        return {**metrics, **{f"time_{k_}": v for k_, v in timers.items()}}

    def _scored_batch(self, records, it: int, metrics: dict) -> tuple[Batch, float, float]:
        """Steps 1-3: rollouts, their outcome rewards (scored chunk by chunk, overlapped with sampling), the
        prompt filter (rows masked, shapes kept), and the reference's log-probs where the method needs them.
        Returns (batch, sampled tokens, seconds spent scoring)."""
        config, n, num_prompts = self.config, self.n, len(records)
        ro = self.rollouts(records, jax.random.fold_in(jax.random.key(config.seed), it), score=True)
        outcome = ro["outcome"]
        acc = outcome.reshape(num_prompts, n).mean(axis=1)
        keep = np.ones(num_prompts, np.float32)
        if config.data.filter.enabled:
            keep = ((acc >= config.data.filter.low) & (acc <= config.data.filter.high)).astype(np.float32)
        metrics.update({"rollout_acc": float(outcome.mean()), "response_len": float(ro["lengths"].mean()),
                        "truncated_frac": float((ro["finish"] == sampling.FINISH_LENGTH).mean()),
                        **{f"reward_{k_}": v for k_, v in ro["reward_stats"].items()},
                        "prompts_kept": float(keep.sum())})
        p_toks, p_mask = self.prompt_arrays(records, n)
        rollouts = Traj(p_toks, p_mask, ro["tokens"], ro["mask"] * np.repeat(keep, n)[:, None])
        ref_logp = np.asarray(self.logp_in_chunks(self.ref, rollouts)) if self.algo.rollout_ref_logp(config) else None
        group = np.repeat(np.arange(num_prompts), n).astype(np.int32)
        batch = Batch(it, records, rollouts, ro["logp"], outcome, keep, group, ref_logp)
        return batch, float(ro["mask"].sum()), ro["reward_s"]

    # -- the update engine --------------------------------------------------------------------------------

    def chunk_rows(self, rows: int) -> int:
        """Rows per chunk for `rows` rows: the largest multiple (up to train.inference_batch_multiple) of the
        micro-batch unit that divides them."""
        unit = math.gcd(rows, math.gcd(self.config.policy.micro_batch, self.config.prm.micro_batch))
        most = self.config.train.inference_batch_multiple
        return next(unit * m for m in range(most, 0, -1) if rows % (unit * m) == 0)

    def _chunks(self, fn, traj: Traj, *args, on_device: bool = False):
        """Apply a jitted per-row function over equal row chunks (a few micro-batches each) and concatenate:
        on the host (numpy), or on the device (a global array split by rows as `put_rows` splits them). Chunks
        are equal so each function compiles once."""
        rows = traj.prompt.shape[0]
        size = self.chunk_rows(rows)
        outs = [fn(*self.put_rows(jax.tree.map(lambda x: x[s:s + size], (traj, *args)))) for s in range(0, rows, size)]
        if on_device:
            return distributed.join_rows(self.rows_sharding((rows,) + outs[0].shape[1:]), *outs)
        return np.concatenate([distributed.to_host(out) for out in outs])

    def logp_in_chunks(self, params, traj):
        return self._chunks(lambda tr: self.logp(params, Traj(*tr)), traj)

    def values_in_chunks(self, traj):
        return self._chunks(lambda tr: self.values(self.full("policy"), Traj(*tr)), traj)

    def rewards_in_chunks(self, traj, ref_logp, on_device: bool = False):
        """[N, R] the PRM's token rewards: numpy, or (on_device) a global array split by rows."""
        def rewards(tr, rl=None):
            return self.prm_rewards(self.full("prm"), Traj(*tr), rl)
        return self._chunks(rewards, traj, *([] if ref_logp is None else [ref_logp]), on_device=on_device)

    @staticmethod
    def minibatches(n_rows: int, rows_per_prompt: int, minibatch_prompts: int):
        per = minibatch_prompts * rows_per_prompt
        return [np.arange(s, s + per) for s in range(0, n_rows, per)]

    def record_step(self, out: dict, prefix: str, agg: dict):
        """Append a step's host outputs to `agg` as prefix_key; count (and stop on too many) non-finite steps."""
        if not bool(out.pop("finite")):
            self.nonfinite_total += 1
            self.nonfinite_in_a_row += 1
            agg[f"{prefix}_skipped_nonfinite"] = agg.get(f"{prefix}_skipped_nonfinite", 0) + 1
            if self.nonfinite_in_a_row >= self.config.train.max_nonfinite_in_a_row:
                raise FloatingPointError(
                    f"{self.nonfinite_in_a_row} non-finite {prefix} updates in a row (each was skipped): "
                    f"lower {prefix}.lr, check the data, or raise train.max_nonfinite_in_a_row")
        else:
            self.nonfinite_in_a_row = 0
        for key, v in out.items():
            agg.setdefault(f"{prefix}_{key}", []).append(float(np.asarray(v)))

    def updates(self, update, prefix: str, traj: Traj, extra: dict, rows_per_prompt: int, minibatch_prompts: int,
                micro: int, agg: dict, count=None) -> dict:
        """One epoch of optimiser steps (`update`: a jitted policy or PRM update) over mini-batches of
        `minibatch_prompts` prompts. Each micro-batch gets `num_tokens`, the mini-batch's normaliser (its
        response tokens, or the sum of the per-row `count`, e.g. step ends), and `row_scale` = 1 / micro-batches."""
        for idx in self.minibatches(traj.prompt.shape[0], rows_per_prompt, minibatch_prompts):
            part = {k_: v[idx] for k_, v in extra.items()}
            total = traj.response_mask[idx].sum() if count is None else count[idx].sum()
            part["num_tokens"] = np.full((len(idx),), np.float32(max(total, 1.0)), np.float32)
            part["row_scale"] = np.full((len(idx),), 1.0 / (len(idx) // micro), np.float32)
            self.state, out = update(self.state, self.put_micro((take(traj, idx), part), len(idx) // micro))
            out = distributed.to_host(out)
            if "logp_diff_max" in out:  # meaningful before the first update only (later ones see a new policy)
                agg.setdefault("logp_diff_sampler_vs_trainer", float(np.asarray(out.pop("logp_diff_max"))))
            self.record_step(out, prefix, agg)
        return agg

    def policy_step(self, traj: Traj, extra: dict, rows_per_prompt: int) -> dict:
        agg: dict = {}
        for _ in range(self.config.policy.epochs):
            self.updates(self.policy_update, "policy", traj, extra, rows_per_prompt,
                         self.config.policy.minibatch_prompts, self.config.policy.micro_batch, agg)
        return means(agg)
