"""Train: python -m repirl_jax.launch [--config=configs/NAME.py] [--workdir=DIR] [--config.KEY=VALUE ...]

With no --config it runs configs/demo.py (the embedded default; shipped with the package: `cli.configs_dir()`).
Relaunching the same command continues from the last checkpoint in WORKDIR/checkpoints and ends with the same
metrics as an uninterrupted run. Writes WORKDIR/metrics.jsonl, WORKDIR/tensorboard/, WORKDIR/checkpoints/ and
WORKDIR/summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from typing import Any

import jax

from repirl_jax import algorithms
from repirl_jax import cli as cli_lib
from repirl_jax.algorithms.bc import BC
from repirl_jax.checkpoints import hf
from repirl_jax.checkpoints import state as checkpoint
from repirl_jax.checkpoints.run_dirs import (  # noqa: F401 (re-exported)
    RUN_TOKENIZER,
    TOKENIZER_FILES,
    build_tokenizer,
    save_run_tokenizer,
    tokenizer_source,
)
from repirl_jax.checkpoints.run_dirs import is_run_dir as _is_run_dir
from repirl_jax.config import format_fields
from repirl_jax.data import synthetic
from repirl_jax.data.prompts import format_prompt as format_prompt_text
from repirl_jax.data.prompts import load_prompt_set
from repirl_jax.evaluation import reports
from repirl_jax.evaluation.early_signal import EarlySignal
from repirl_jax.models import heads, lora, prm_heads, qwen
from repirl_jax.models.config import QwenConfig, preset
from repirl_jax.rewards.scorers import build_reward_fn
from repirl_jax.runtime import backend, distributed, host_memory
from repirl_jax.runtime.sharding import make_mesh
from repirl_jax.training import metrics as metrics_lib
from repirl_jax.training import train

log = logging.getLogger("repirl_jax")


# --- what a config names: tokenizer, data, reward, models -----------------------------------------------

def format_prompt(config, tokenizer, problem: str) -> str:
    """`data.prompts.format_prompt` with the config's data.prompt_format (and synthetic task settings)."""
    s = config.data.synthetic
    return format_prompt_text(problem, config.data.prompt_format, tokenizer, modulus=s.modulus, ops=s.ops)


def build_datasets(config, tokenizer):
    """(train records, validation records, test records or None)."""
    if config.data.train in ("synthetic", "synthetic:test"):
        s = config.data.synthetic
        splits = synthetic.make_splits(seed=config.seed, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test,
                                       noise=s.noise, noise_kind=s.get("noise_kind", "carried"),
                                       num_steps=tuple(s.num_steps), ops=s.ops,
                                       max_addend=s.max_addend, max_factor=s.max_factor, modulus=s.modulus,
                                       num_experts=max(config.data.experts_per_prompt, 1))
        if config.data.prompt_format != "raw":  # the task through a chat model's template
            for rec in (r for split in splits.values() for r in split):
                rec["prompt"] = format_prompt(config, tokenizer, rec["prompt"])
        if config.data.train == "synthetic:test":  # test-time training: the test prompts are the training set
            return splits["test"], splits["val"], splits["test"]
        return splits["train"], splits["val"], splits["test"]
    d = config.data
    train, report = load_prompt_set(d.train, d.prompt_field, d.answer_field, d.experts_field or None,
                                    domain=d.domain, on_bad_row=d.on_bad_row,
                                    require_experts=algorithms.get(config.algo).experts_in_data)
    if report.skipped:
        log.warning("%s: skipped %s of %d rows, e.g. %s", d.train, report.skipped, report.rows, report.first_errors[:2])
    val = []
    if d.val:
        val, _ = load_prompt_set(d.val, d.prompt_field, d.answer_field, None, domain=d.domain,
                                 on_bad_row=d.on_bad_row, require_experts=False, limit=d.val_limit)
    for rec in train + val:
        rec["prompt"] = format_prompt(config, tokenizer, rec["prompt"])
    return train, val, None


def model_config(config, tokenizer=None):
    """The run's QwenConfig: a training run's model_config.json, a checkpoint's config.json, or the preset
    (vocabulary: model.vocab_size, else the tokenizer's rounded up to a multiple of 8, else the preset's)."""
    m = config.model
    if m.path and os.path.exists(os.path.join(m.path, "model_config.json")):  # a training run directory
        with open(os.path.join(m.path, "model_config.json")) as f:
            cfg = QwenConfig.from_hf_dict(json.load(f), source=os.path.join(m.path, "model_config.json"))
    elif m.path:
        cfg = QwenConfig.from_hf_dir(m.path)
    else:
        over = {k: v for k, v in dict(hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                                      num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
                                      head_dim=m.head_dim, intermediate_size=m.intermediate_size).items() if v}
        vocab = m.vocab_size or (8 * math.ceil(len(tokenizer) / 8) if tokenizer is not None else 0)
        cfg = preset(m.preset, **over, **({"vocab_size": vocab} if vocab else {}))
    if tokenizer is not None and cfg.vocab_size < len(tokenizer):
        raise ValueError(f"the model's vocab_size={cfg.vocab_size} is smaller than the tokenizer's {len(tokenizer)}")
    return cfg.replace(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attn_block=m.get("attn_block", 128),
                       attn_impl=m.get("attn_impl", "auto"))


def _policy_params(config) -> int:
    """The policy's parameter count from the config alone (no JAX call); 0 where it cannot be read (the run
    itself then says why)."""
    try:
        return model_config(config).num_params()
    except Exception:  # noqa: BLE001
        return 0


def lora_config(cfg, settings):
    """`cfg` with a model's LoRA settings (policy.lora / prm.lora; rank 0: none)."""
    if not settings.rank:
        return cfg
    return cfg.replace(lora_rank=settings.rank, lora_alpha=settings.alpha, lora_targets=tuple(settings.targets))


def build_models(config, cfg, mesh, policy_params=None):
    """The run's models from `cfg` (the base architecture): policy, PRM, reference. A model with LoRA
    (policy.lora.rank / prm.lora.rank > 0) trains an adapter on a frozen base; the policy's base is shared by
    the PRM (when it starts from the policy) and is the reference model."""

    seed = jax.random.key(config.seed)
    if policy_params is None:
        if config.model.path and _is_run_dir(config.model.path):  # a training run: its latest policy
            policy_params = jax.device_put(hf.load_training_checkpoint(config.model.path)[0])
        elif config.model.path:  # master weights in model.param_dtype (a bf16 checkpoint would lose small updates)
            policy_params, _ = hf.load_any(config.model.path, mesh=mesh, dtype=config.model.param_dtype)
        else:
            policy_params = qwen.init_params(cfg, jax.random.fold_in(seed, 1))
    pcfg = lora_config(cfg, config.policy.lora)
    base = policy_params if pcfg.lora_rank else None
    policy = {"model": lora.init_adapter(pcfg, jax.random.fold_in(seed, 4)) if base is not None else policy_params}
    if algorithms.get(config.algo).needs_value_head(config):
        policy["value"] = heads.init_scalar_head(cfg, jax.random.fold_in(seed, 2))
    prm, prm_cfg, prm_base = None, lora_config(cfg, config.prm.lora), None
    if train.needs_prm(config):
        head = heads.init_scalar_head(cfg, jax.random.fold_in(seed, 3))
        if config.prm.path and _is_run_dir(config.prm.path):  # a training run's learned PRM, head included
            trunk, _, saved_head, _ = hf.load_training_checkpoint(config.prm.path, which="prm")
            trunk = jax.device_put(trunk)
            if saved_head is not None:
                head = {k: jax.numpy.asarray(v, jax.numpy.float32) for k, v in saved_head.items()}
        else:
            trunk = hf.load_any(config.prm.path, mesh=mesh, dtype=config.model.param_dtype)[0] if config.prm.path \
                else policy_params
        copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)  # noqa: E731
        if prm_cfg.lora_rank:  # an adapter on a frozen trunk: the policy's base itself when both start alike
            trained = trunk is policy_params and base is None  # the policy trains these very weights
            prm_base = copy(trunk) if trained else trunk
            trunk = lora.init_adapter(prm_cfg, jax.random.fold_in(seed, 5))
        elif trunk is policy_params:
            trunk = copy(trunk)  # trained: its own copy
        prm = prm_heads.get(config).tree(trunk, head)
    ref = None
    if train.needs_ref(config):
        ref = base if base is not None else jax.tree.map(lambda x: x.copy(), policy_params)  # frozen either way
    return train.Models(pcfg, policy, prm, ref, prm_cfg=prm_cfg if prm_cfg != pcfg else None, base=base,
                        prm_base=prm_base)


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


# --- the run ------------------------------------------------------------------------------------------

def _warmup_config(config):
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


def bc_warmup(config, workdir, mesh, cfg, tokenizer, reward_fn, train_set, progress_bar=True):
    """Behaviour cloning on the experts of the first `warmup_bc.prompts` train prompts; saved once to
    WORKDIR/warmup (a rerun loads it instead of training again)."""

    path = os.path.join(workdir, "warmup")
    if hf.is_params_dir(path):
        return hf.load_params_dir(path, mesh=mesh, cfg=cfg)[0]
    bc = _warmup_config(config)
    subset = train_set[:config.warmup_bc.prompts or len(train_set)]
    trainer = train.Trainer(bc, mesh, build_models(bc, cfg, mesh), tokenizer, reward_fn, subset)
    bar = metrics_lib.progress(config.warmup_bc.steps, desc="bc warm-up") if progress_bar else None
    for step in range(1, config.warmup_bc.steps + 1):
        m = trainer.iteration(step)
        if bar:
            bar.update(1)
            bar.set_postfix(nll=f"{m.get('policy_bc_nll', float('nan')):.3f}")
    if bar:
        bar.close()
    params = trainer.model_params()
    if lora.has_adapter(params):  # a LoRA warm-up: its adapter folded into the base the RL phase starts from
        params = jax.jit(lora.merge, static_argnums=1)(params, trainer.cfg)
    hf.save_params_dir(params, cfg, path, overwrite=True)
    return params


LORA_BASES = "lora_bases.json"


def record_lora_bases(config, workdir: str, models, warmed_up: bool) -> dict:
    """WORKDIR/lora_bases.json: where each LoRA model's frozen base lives (a model directory) and its
    fingerprint (lora.fingerprint). Checkpoints hold only adapters, so a resumed run, `evaluate --checkpoint`
    and exports read the base from there; a base that changed since is an error. A base that is no model
    directory (a random init, a training run's policy) is written to WORKDIR/base or WORKDIR/prm_base."""

    file = os.path.join(workdir, LORA_BASES)
    saved = json.load(open(file)) if os.path.exists(file) else {}
    out = {}
    for name, params, source in (("policy", models.base, "warmup" if warmed_up else config.model.path),
                                 ("prm", models.prm_base, config.prm.path)):
        if params is None:
            continue
        if name == "prm" and params is models.base:
            out[name] = out["policy"]
            continue
        path = os.path.join(workdir, "warmup") if source == "warmup" else source
        if not path or _is_run_dir(path):
            path = os.path.join(workdir, "base" if name == "policy" else "prm_base")
            if not hf.is_params_dir(path):  # collective (orbax), atomic
                hf.save_params_dir(params, models.cfg.without_lora(), path)
        out[name] = {"path": os.path.abspath(path), "fingerprint": lora.fingerprint(path)}
        if name in saved and saved[name]["fingerprint"] != out[name]["fingerprint"]:
            raise ValueError(f"{file}: the {name}'s LoRA base {path} changed since this run started (fingerprint "
                             f"{saved[name]['fingerprint'][:12]}... now {out[name]['fingerprint'][:12]}...): its "
                             f"adapters were trained on the old one; restore that base or start a new workdir")
    if out and jax.process_index() == 0:
        with open(file, "w") as f:
            json.dump(out, f, indent=2)
    return out


def prepare_workdir(workdir: str) -> bool:
    """Create `workdir` (and parents) and check it is writable; True if this call created it. Raises
    ValueError naming the directory otherwise."""
    created = not os.path.exists(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"--workdir={workdir}: cannot create or write it ({e.strerror or e}); choose a "
                         f"writable directory") from e
    return created


def _has_results(workdir: str) -> bool:
    """Whether a run left anything worth keeping: a checkpoint, a BC warm-up, or a metrics line."""
    ckpts = os.path.join(workdir, "checkpoints")
    metrics = os.path.join(workdir, "metrics.jsonl")
    return ((os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts)))
            or os.path.isdir(os.path.join(workdir, "warmup"))
            or (os.path.exists(metrics) and os.path.getsize(metrics) > 0))


@dataclasses.dataclass
class RunResult:
    """What run() returns: `summary`, the JSON-able figures also written to WORKDIR/summary.json, and
    `trainer`, the live Trainer at the end (its state holds the final policy, PRM and optimiser states), for
    callers in the same process (tools/reproduce.py, tests)."""
    summary: dict
    trainer: Any


def run(config, workdir: str, progress_bar: bool = True) -> RunResult:
    """Train per `config` in `workdir` (resuming if it holds checkpoints). A run that fails before producing
    anything (bad data, tokenizer, config) removes the workdir it created."""
    workdir = os.path.abspath(workdir)
    if jax.process_index() == 0:
        created = prepare_workdir(workdir)
    else:  # the other processes of a job: the directory (local or shared) exists, process 0 owns cleanup
        os.makedirs(workdir, exist_ok=True)
        created = False
    try:
        return _run_in(config, workdir, progress_bar)
    except BaseException:
        if created and not _has_results(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        raise


def _run_in(config, workdir: str, progress_bar: bool = True) -> RunResult:
    """run() in an existing, writable `workdir`: build what the config names, (BC warm-up,) train, report."""


    train.validate(config, jax.device_count())
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    devices = jax.devices()[:config.mesh.devices] if config.mesh.get("devices", 0) else None
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    tokenizer = build_tokenizer(config)
    train_set, val_set, test_set = build_datasets(config, tokenizer)
    cfg = model_config(config, tokenizer)
    cfg = cfg.replace(dtype=backend.compute_dtype(cfg.dtype))  # float32 where the backend lacks bf16 dots
    reward_fn, close_reward = build_reward_fn(config)
    if jax.process_index() == 0:  # what repirl_jax.convert and evaluate need to use this run's checkpoints
        save_run_tokenizer(tokenizer, workdir)
        with open(os.path.join(workdir, "model_config.json"), "w") as f:
            json.dump(cfg.to_hf_dict(), f, indent=2)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2, default=str)
    started = time.time()
    summary: dict = {"config": config.to_dict(), "model_params": cfg.num_params()}
    try:
        trainer = _build_trainer(config, workdir, mesh, cfg, tokenizer, reward_fn, train_set, summary, progress_bar)
        _train(config, workdir, trainer, val_set, test_set, summary, progress_bar)
        summary["time_total_s"] = time.time() - started
    finally:
        if close_reward:
            close_reward()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
    return RunResult(summary, trainer)


def _build_trainer(config, workdir, mesh, cfg, tokenizer, reward_fn, train_set, summary: dict, progress_bar: bool):
    """The BC warm-up (when `warmup_bc.steps`), the models it hands on, and the Trainer over them."""
    init_policy = None
    if config.warmup_bc.steps:
        t = time.time()
        init_policy = bc_warmup(config, workdir, mesh, cfg, tokenizer, reward_fn, train_set, progress_bar)
        summary["time_warmup_s"] = time.time() - t
    models = build_models(config, cfg, mesh, init_policy)
    bases = record_lora_bases(config, workdir, models, init_policy is not None)
    if bases:
        summary["lora_bases"] = bases
    return train.Trainer(config, mesh, models, tokenizer, reward_fn, train_set)


def _train(config, workdir: str, trainer, val_set, test_set, summary: dict, progress_bar: bool) -> None:
    """Held-out accuracy before, the iterations (from the latest checkpoint, if any), held-out accuracy and
    the PRM report after; fills `summary`."""
    val = trainer.tokenize_set(val_set, "val") if val_set else []
    test = trainer.tokenize_set(test_set, "test") if test_set else []
    if test:
        summary["test_accuracy_start"] = trainer.evaluate(test, config.train.eval_batch)["accuracy"]
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep,
                                   async_save=config.train.async_checkpoint,
                                   best_metric="val_accuracy" if val else None)
    start = 0
    latest = ckpt.latest_step()
    if latest is not None:
        target = checkpoint.abstract_like(trainer.state, trainer.state_shardings)
        trainer.state, _ = ckpt.restore(latest, target=target)
        start = latest
        log.warning("resumed from %s at iteration %d", workdir, latest)
    if val and start == 0:  # held-out accuracy before training (a resumed run has it in its first summary)
        summary["val_accuracy_start"] = trainer.evaluate(val, config.train.eval_batch)["accuracy"]
    last_val = _iterations(config, workdir, trainer, ckpt, val, start, summary, progress_bar)
    ckpt.wait()
    summary["data_report"] = trainer.data_report
    summary["nonfinite_updates_skipped"] = trainer.nonfinite_total
    if test:
        summary["test_accuracy_end"] = trainer.evaluate(test, config.train.eval_batch)["accuracy"]
    char_level = config.data.tokenizer == "synthetic"  # the step labels need one token per character
    if test and config.data.train == "synthetic" and char_level and "prm" in trainer.state:
        summary.update(reports.prm_report(config, trainer, test, workdir))
    if last_val is not None:
        summary["val_accuracy_end"] = last_val
    summary.update(final_iteration=config.train.max_iterations, best_step=ckpt.best_step() if val else None,
                   checkpoints=os.path.join(workdir, "checkpoints"))
    ckpt.close()


def _iterations(config, workdir: str, trainer, ckpt, val, start: int, summary: dict, progress_bar: bool):
    """Iterations start+1 .. max_iterations: metrics lines, held-out accuracy every `eval_every`, checkpoints
    every `checkpoint_every` and at the end, the empty-iteration guard and the early-signal watch. Returns
    the last held-out accuracy (None without a validation set)."""

    writer = metrics_lib.MetricsWriter(workdir, resume_from=start)
    bar = metrics_lib.progress(config.train.max_iterations, initial=start) if progress_bar else None
    last_val = None
    empty = EmptyIterations(config.train.get("max_empty_iterations", 0), config.data.filter.low,
                            config.data.filter.high)
    summary["empty_iterations"] = 0
    watch = None
    if config.train.get("early_signal_k", 0) and trainer.algo.needs_prm:
        watch = EarlySignal(config.train.early_signal_k, os.path.join(workdir, "early_signal.jsonl")
                            if jax.process_index() == 0 else None, config.train.eval_batch)
    for it in range(start + 1, config.train.max_iterations + 1):
        m = trainer.iteration(it)
        if watch is not None:
            watch.after_iteration(trainer, it)
        try:
            empty.update(it, m)
        finally:
            summary["empty_iterations"] = empty.total
        is_ckpt = it % config.train.checkpoint_every == 0 or it == config.train.max_iterations
        if val and (it % config.train.eval_every == 0 or is_ckpt):
            last_val = trainer.evaluate(val, config.train.eval_batch)["accuracy"]
            m["val_accuracy"] = last_val
        writer.write(it, m)
        if is_ckpt:
            meta = {"iteration": it, "config": config.to_dict(),
                    "metrics": {"val_accuracy": last_val} if last_val is not None else {}}
            ckpt.save(it, trainer.state, meta)
        if bar:
            bar.update(1)
            bar.set_postfix({k: f"{m[k]:.3f}" for k in ("rollout_acc", "val_accuracy", "irl_ess") if k in m})
    if bar:
        bar.close()
    writer.close()
    if watch is not None:
        summary.update(watch.summary())
    return last_val


def run_stages(config, workdir: str, progress_bar: bool = True) -> dict:
    """The paper's schedule (section 4.1): a math stage, then a code stage that starts from the math stage's
    final policy (exported to WORKDIR/math/final_policy). Each stage is a resumable run in its own
    sub-directory; a finished math stage is not run again."""
    math_dir, code_dir = os.path.join(workdir, "math"), os.path.join(workdir, "code")
    final = os.path.join(math_dir, "final_policy")
    math_cfg = config.copy_and_resolve_references()
    math_cfg.stages.enabled = False
    summaries = {}
    if not os.path.exists(final):
        summaries["math"] = run(math_cfg, math_dir, progress_bar).summary
        hf.checkpoint_to_hf(math_dir, final)
        for name in hf.CARRIED_FILES[2:]:  # the tokenizer files, so the next stage can load them from here
            src = os.path.join(config.data.tokenizer or config.model.path or "", name)
            if os.path.exists(src):
                shutil.copy2(src, os.path.join(final, name))
    code_cfg = math_cfg.copy_and_resolve_references()
    code_cfg.model.path = final
    code_cfg.data.train, code_cfg.data.val = config.stages.code_train, config.stages.code_val
    code_cfg.data.tokenizer = config.data.tokenizer or config.model.path
    code_cfg.data.prompt_format, code_cfg.data.domain, code_cfg.reward.kind = "chat_code", "code", "code"
    summaries["code"] = run(code_cfg, code_dir, progress_bar).summary
    return {"stages": summaries, "checkpoints": os.path.join(code_dir, "checkpoints")}


# --- command line -------------------------------------------------------------------------------------

def main(argv) -> int:
    del argv
    from absl import flags
    FLAGS = flags.FLAGS
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    config = FLAGS.config
    host_memory.keep_freed_host_memory(_policy_params(config))  # before any JAX backend starts its threads
    multi = distributed.initialize()  # before any other JAX call; a no-op for a single process
    if FLAGS.show_config:
        print(format_fields(config))
        return 0
    workdir = FLAGS.workdir or os.path.join("runs", os.path.splitext(os.path.basename(FLAGS["config"].config_filename))[0])
    try:
        if config.get("stages") is not None and config.stages.enabled:
            summary = run_stages(config, workdir)
        else:
            summary = run(config, workdir).summary
    except (ValueError, OSError, FloatingPointError) as e:
        if multi:
            _stop_job(e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BaseException as e:
        if multi:
            _stop_job(e)
        raise
    if multi and not distributed.is_main():
        return 0
    if "stages" in summary:
        for name, stage in summary["stages"].items():
            print(f"\nstage {name}:" + _summary_table(stage, os.path.join(workdir, name)))
    else:
        print(_summary_table(summary, workdir))
    return 0


def _stop_job(e: BaseException) -> None:
    """A failed process of a multi-process job: say which and why, then exit at once. A normal exit would
    wait in jax.distributed's shutdown barrier for processes that are themselves waiting for this one in a
    collective; exiting makes the coordination service notice the missing heartbeat and stop every other
    process with an error instead of a hang (after REPIRL_HEARTBEAT_TIMEOUT_S)."""

    traceback.print_exception(e)
    print(f"error: process {jax.process_index()} of {jax.process_count()} failed ({type(e).__name__}: {e}); "
          f"stopping the job", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def _summary_table(summary: dict, workdir: str) -> str:
    lines = ["", "| result | value |", "|---|---|"]
    names = {"test_accuracy_start": "test accuracy before RL (after the BC warm-up, if any; greedy)",
             "test_accuracy_end": f"test accuracy after {summary.get('config', {}).get('algo', 'RL')} (greedy)",
             "prm_auroc_all_steps": "PRM step-error AUROC (all steps)",
             "prm_auroc_first_error": "PRM AUROC, first wrong step vs the steps before it",
             "prm_auroc_policy_samples": "PRM step-error AUROC on the policy's samples only",
             "policy_logp_auroc_all_steps": "policy log-prob step-error AUROC, same steps (likelihood head's start)",
             "val_accuracy_start": "validation accuracy before RL (greedy)",
             "val_accuracy_end": "validation accuracy at the last iteration (greedy)",
             "empty_iterations": "iterations that kept no prompt (nothing learned)"}
    for key in ("val_accuracy_start", "val_accuracy_end", "test_accuracy_start", "test_accuracy_end",
                "prm_auroc_all_steps", "prm_auroc_first_error", "prm_auroc_policy_samples", "policy_logp_auroc_all_steps", "empty_iterations", "best_step",
                "time_total_s", "localisation_png"):
        if key == "empty_iterations" and not summary.get(key):
            continue
        if key in summary and summary[key] is not None:
            v = summary[key]
            name = names.get(key, key)
            if key.startswith(("test_accuracy", "val_accuracy")) and isinstance(v, float):
                lines.append(f"| {name} | {100 * v:.1f}% |")
            else:
                lines.append(f"| {name} | {v:.3f} |" if isinstance(v, float) else f"| {name} | {v} |")
    lines.append(f"| metrics | {os.path.join(workdir, 'metrics.jsonl')} |")
    lines.append(f"| checkpoints | {summary.get('checkpoints')} |")
    return "\n".join(lines)


def cli() -> None:
    from absl import flags

    cli_lib.define_config_file("config", cli_lib.shipped_config("demo.py"), "Training config file.")
    flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")
    flags.DEFINE_bool("show_config", False, "Print every field of the config (after overrides) with its value, "
                      "meaning and default, then exit.")
    cli_lib.run_app(main, __name__, config_flag="config")


if __name__ == "__main__":
    cli()
