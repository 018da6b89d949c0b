"""The training loop: a run is one or two phases, each a Trainer driven by the same `iterate`.

    warm_up(config, ...)  the BC warm-up phase (warmup_bc.steps > 0): behaviour cloning on the demonstrations
                          of the first warmup_bc.prompts train prompts; its policy (a LoRA adapter merged in)
                          is saved to WORKDIR/warmup, and starts the training phase (a rerun loads it)
    train(config, ...)    the config's algorithm for train.max_iterations: metrics lines, held-out accuracy,
                          checkpoints (resumed from the latest), the empty-iteration guard, an optional watch
                          (e.g. evaluation.early_signal), held-out accuracy before and after -> TrainResult

Each phase has its own optimiser state; what one phase hands the next is the policy's weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Callable, Protocol

import jax

from repirl_jax.algorithms.bc import BC
from repirl_jax.checkpoints import hf
from repirl_jax.checkpoints import state as checkpoint
from repirl_jax.models import lora
from repirl_jax.training import metrics as metrics_lib
from repirl_jax.training.build import build_models
from repirl_jax.training.train import Trainer

log = logging.getLogger("repirl_jax")


def iterate(trainer, first: int, last: int, after: Callable[[int, dict], None] | None = None, bar=None,
            shown: tuple[str, ...] = ()) -> None:
    """Iterations first..last of `trainer`; `after(it, metrics)` follows each (it may add metrics); `bar` (a
    progress bar, or None) advances with the `shown` metrics."""
    for it in range(first, last + 1):
        m = trainer.iteration(it)
        if after is not None:
            after(it, m)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{m[k]:.3f}" for k in shown if k in m})
    if bar is not None:
        bar.close()


# --- the BC warm-up phase -----------------------------------------------------------------------------

def warmup_config(config):
    """The warm-up phase's config: algo=bc with warmup_bc's learning rate and batch, no prompt filter."""
    bc = config.copy_and_resolve_references()
    bc.algo = BC.name
    bc.policy.lr = config.warmup_bc.lr
    bc.policy.warmup_steps = 0
    bc.data.prompts_per_iter = config.warmup_bc.batch_prompts
    bc.policy.minibatch_prompts = config.warmup_bc.batch_prompts
    bc.policy.micro_batch = math.gcd(config.warmup_bc.batch_prompts * max(config.data.experts_per_prompt, 1),
                                     config.policy.micro_batch * 4)
    bc.data.filter.enabled = False
    return bc


def warm_up(config, workdir, mesh, cfg, tokenizer, reward_fn, train_set, progress_bar=True):
    """The BC warm-up phase: warmup_bc.steps iterations of `warmup_config(config)` on the first
    warmup_bc.prompts train prompts. Returns the policy's parameters (read with `cfg`), saved once to
    WORKDIR/warmup (a rerun loads them instead of training again)."""

    path = os.path.join(workdir, "warmup")
    if hf.is_params_dir(path):
        return hf.load_params_dir(path, mesh=mesh, cfg=cfg)[0]
    bc = warmup_config(config)
    subset = train_set[:config.warmup_bc.prompts or len(train_set)]
    trainer = Trainer(bc, mesh, build_models(bc, cfg, mesh), tokenizer, reward_fn, subset)
    bar = metrics_lib.progress(config.warmup_bc.steps, desc="bc warm-up") if progress_bar else None
    iterate(trainer, 1, config.warmup_bc.steps, bar=bar, shown=("policy_bc_nll",))
    params = trainer.model_params()
    if lora.has_adapter(params):  # a LoRA warm-up: its adapter folded into the base the next phase starts from
        params = jax.jit(lora.merge, static_argnums=1)(params, trainer.cfg)
    hf.save_params_dir(params, cfg, path, overwrite=True)
    return params


# --- the training phase -------------------------------------------------------------------------------

class Watch(Protocol):
    """Something that looks at the trainer after each iteration and reports once at the end."""

    def after_iteration(self, trainer, it: int) -> None: ...

    def summary(self) -> dict: ...


class EmptyIterations:
    """Counts iterations in which the prompt filter kept no prompt (prompts_kept == 0: every loss is 0 and
    nothing is learned). Warns at each, and after `limit` in a row (0: never) stops the run with a message."""

    def __init__(self, limit: int, filter_low: float, filter_high: float):
        self.limit, self.low, self.high = limit, filter_low, filter_high
        self.total, self.in_a_row = 0, 0

    def update(self, it: int, metrics: dict) -> None:
        if "prompts_kept" not in metrics:  # BC iterations have no rollouts to filter
            return
        if metrics["prompts_kept"] > 0:
            self.in_a_row = 0
            return
        self.total += 1
        self.in_a_row += 1
        acc = metrics.get("rollout_acc", float("nan"))
        log.warning("iteration %d: no prompt kept (rollout accuracy %.3f; the filter keeps prompts whose "
                    "accuracy is in [%g, %g]): nothing was learned this iteration (%d such in a row)",
                    it, acc, self.low, self.high, self.in_a_row)
        if self.limit and self.in_a_row >= self.limit:
            raise ValueError(
                f"{self.in_a_row} iterations in a row kept no prompt (train.max_empty_iterations="
                f"{self.limit}; last rollout accuracy {acc:.3f}, filter [{self.low}, {self.high}]): the policy "
                f"solves none (or all) of its prompts, so the run learns nothing. Start from a stronger model "
                f"(or a BC warm-up: warmup_bc.steps), use easier prompts, or set data.filter.enabled=False")


@dataclasses.dataclass
class TrainResult:
    """What the training phase reports (None: not measured, e.g. without a validation or test set)."""
    final_iteration: int
    checkpoints: str
    empty_iterations: int = 0
    nonfinite_updates_skipped: int = 0
    data_report: dict = dataclasses.field(default_factory=dict)
    best_step: int | None = None
    val_accuracy_start: float | None = None  # greedy, before the first iteration (a resumed run: not again)
    val_accuracy_end: float | None = None  # at the last iteration
    test_accuracy_start: float | None = None
    test_accuracy_end: float | None = None
    watch: dict = dataclasses.field(default_factory=dict)  # the watch's summary

    def to_dict(self) -> dict[str, Any]:
        """The summary.json fields: every measured figure (best_step always), the watch's merged in."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "watch"}
        out = {k: v for k, v in out.items() if v is not None or k == "best_step"}
        return {**out, **self.watch}


def train(config, workdir: str, trainer, val: list[dict], test: list[dict], watch: Watch | None = None,
          progress_bar: bool = True) -> TrainResult:
    """The training phase on `trainer` (val / test: tokenised records, possibly empty): held-out accuracy
    before, iterations from the latest checkpoint in WORKDIR/checkpoints (if any) to train.max_iterations,
    held-out accuracy after."""

    tc = config.train
    result = TrainResult(final_iteration=tc.max_iterations, checkpoints=os.path.join(workdir, "checkpoints"))
    if test:
        result.test_accuracy_start = trainer.evaluate(test, tc.eval_batch)["accuracy"]
    ckpt = checkpoint.Checkpointer(result.checkpoints, max_to_keep=tc.keep, async_save=tc.async_checkpoint,
                                   best_metric="val_accuracy" if val else None)
    start = ckpt.latest_step() or 0
    if start:
        target = checkpoint.abstract_like(trainer.state, trainer.state_shardings)
        trainer.state, _ = ckpt.restore(start, target=target)
        log.warning("resumed from %s at iteration %d", workdir, start)
    elif val:  # held-out accuracy before training (a resumed run has it in its first summary)
        result.val_accuracy_start = trainer.evaluate(val, tc.eval_batch)["accuracy"]
    _iterations(config, workdir, trainer, ckpt, val, start, result, watch, progress_bar)
    ckpt.wait()
    result.best_step = ckpt.best_step() if val else None
    ckpt.close()
    result.data_report = trainer.data_report
    result.nonfinite_updates_skipped = trainer.nonfinite_total
    if test:
        result.test_accuracy_end = trainer.evaluate(test, tc.eval_batch)["accuracy"]
    return result


def _iterations(config, workdir: str, trainer, ckpt, val, start: int, result: TrainResult, watch, progress_bar):
    """Iterations start+1 .. max_iterations: metrics lines, held-out accuracy every `eval_every`, checkpoints
    every `checkpoint_every` and at the end, the empty-iteration guard and the watch."""

    tc = config.train
    writer = metrics_lib.MetricsWriter(workdir, resume_from=start)
    empty = EmptyIterations(tc.get("max_empty_iterations", 0), config.data.filter.low, config.data.filter.high)

    def after(it: int, m: dict) -> None:
        if watch is not None:
            watch.after_iteration(trainer, it)
        try:
            empty.update(it, m)
        finally:
            result.empty_iterations = empty.total
        is_ckpt = it % tc.checkpoint_every == 0 or it == tc.max_iterations
        if val and (it % tc.eval_every == 0 or is_ckpt):
            result.val_accuracy_end = m["val_accuracy"] = trainer.evaluate(val, tc.eval_batch)["accuracy"]
        writer.write(it, m)
        if is_ckpt:
            last_val = result.val_accuracy_end
            meta = {"iteration": it, "config": config.to_dict(),
                    "metrics": {"val_accuracy": last_val} if last_val is not None else {}}
            ckpt.save(it, trainer.state, meta)

    bar = metrics_lib.progress(tc.max_iterations, initial=start) if progress_bar else None
    iterate(trainer, start + 1, tc.max_iterations, after, bar, shown=("rollout_acc", "val_accuracy", "irl_ess"))
    writer.close()
    if watch is not None:
        result.watch = watch.summary()
