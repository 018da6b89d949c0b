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
import os
import shutil
import sys
import time
import traceback
from typing import Any

import jax

from repirl_jax import cli as cli_lib
from repirl_jax.checkpoints import hf
from repirl_jax.checkpoints.run_dirs import build_tokenizer, save_run_tokenizer
from repirl_jax.config import format_fields
from repirl_jax.evaluation import reports
from repirl_jax.evaluation.early_signal import EarlySignal
from repirl_jax.rewards.scorers import build_reward_fn
from repirl_jax.runtime import backend, distributed, host_memory
from repirl_jax.runtime.sharding import make_mesh
from repirl_jax.training import build, loop, train

log = logging.getLogger("repirl_jax")


# --- the run ------------------------------------------------------------------------------------------

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
    """run() in an existing, writable `workdir`: build what the config names, run the phases (BC warm-up,
    training), report."""

    train.validate(config, jax.device_count())
    devices = jax.devices()[:config.mesh.devices] if config.mesh.get("devices", 0) else None
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    tokenizer = build_tokenizer(config)
    train_set, val_set, test_set = build.build_datasets(config, tokenizer)
    cfg = build.model_config(config, tokenizer)
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
        warm = None
        if config.warmup_bc.steps:
            warm = loop.warm_up(config, workdir, mesh, cfg, tokenizer, reward_fn, train_set, progress_bar)
            summary["time_warmup_s"] = time.time() - started
        models = build.build_models(config, cfg, mesh, warm)
        bases = build.record_lora_bases(config, workdir, models, warm is not None)
        if bases:
            summary["lora_bases"] = bases
        trainer = train.Trainer(config, mesh, models, tokenizer, reward_fn, train_set)
        val = trainer.tokenize_set(val_set, "val") if val_set else []
        test = trainer.tokenize_set(test_set, "test") if test_set else []
        result = loop.train(config, workdir, trainer, val, test, _early_signal(config, trainer, workdir),
                            progress_bar)
        summary.update(result.to_dict())
        char_level = config.data.tokenizer == "synthetic"  # the step labels need one token per character
        if test and config.data.train == "synthetic" and char_level and "prm" in trainer.state:
            summary.update(reports.prm_report(config, trainer, test, workdir))
        summary["time_total_s"] = time.time() - started
    finally:
        if close_reward:
            close_reward()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
    return RunResult(summary, trainer)


def _early_signal(config, trainer, workdir: str) -> EarlySignal | None:
    """The early-signal watch (train.early_signal_k > 0, for methods with a PRM; WORKDIR/early_signal.jsonl)."""
    if not (config.train.get("early_signal_k", 0) and trainer.algo.needs_prm):
        return None
    path = os.path.join(workdir, "early_signal.jsonl") if jax.process_index() == 0 else None
    return EarlySignal(config.train.early_signal_k, path, config.train.eval_batch)


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
    host_memory.keep_freed_host_memory(build.policy_param_count(config))  # before any JAX backend starts its threads
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
