r"""Greedy pass@1 on math and code benchmarks, and test-time scaling with answer voting and a PRM.

    python -m repirl_jax.evaluate [--config=configs/eval.py] (--checkpoint=DIR | --hf_dir=DIR) \
        --benchmarks=math500,aime24,amc23,minerva,olympiadbench,leetcode,livecodebench \
        [--limit=N] [--output_dir=DIR] [--num_samples=N --temperature=0.8 \
         --selection=majority,best_of_n,prm_weighted,min_step --prm_checkpoint=DIR]

Writes OUTPUT_DIR/<benchmark>.jsonl (one line per problem: responses, extracted answers, scores) as each
batch finishes, and OUTPUT_DIR/results.md (the table it prints). A rerun skips problems already in the
JSONL files (resume). With --num_samples=1 (default) decoding is greedy: the paper's evaluation.
Test-time scaling (METHOD.md section 5): N samples at --temperature; answers grouped by math-verify
equivalence; `majority` picks the largest group, `best_of_n` the sample with the highest PRM score (the
mean token reward rbar_phi: the dense-reward AIRL paper's reranking), `prm_weighted` the group with the
largest sum of PRM scores (its best-scoring member), `min_step` the sample with the highest minimum step
score (Math-Shepherd: steps end at the run's steps.delimiter; a step's score is the mean token reward of
its tokens, or for a math_shepherd run the value at its step-end token); pass@k is the unbiased estimator
over the N samples. Any training run with a scalar-head PRM or discriminator (rePIRL, AIRL, Math-Shepherd)
can rerank.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from typing import Callable, Sequence

import jax
import numpy as np

from repirl_jax import cli
from repirl_jax.checkpoints import hf
from repirl_jax.checkpoints.run_dirs import load_hf_tokenizer, tokenizer_source
from repirl_jax.data import benchmarks, synthetic
from repirl_jax.data.prompts import format_prompt
from repirl_jax.evaluation import prm_eval
from repirl_jax.evaluation.reports import (  # noqa: F401
    PRM_SELECTIONS,
    SELECTIONS,
    group_answers,
    make_prm_scorer,
    min_step_scores,
    pass_at_k,
    select,
)
from repirl_jax.evaluation.reports import run_config as _run_config
from repirl_jax.generation import completions, sampling
from repirl_jax.generation.completions import Completion
from repirl_jax.rewards.scorers import Scorers
from repirl_jax.runtime import backend, host_memory
from repirl_jax.runtime.sharding import make_mesh

# --- the evaluation of one benchmark ------------------------------------------------------------------

def _read_done(path: str) -> dict[str, dict]:
    """Rows already written (resume). A torn last line (crash mid-write) is dropped and the file rewritten."""
    if not os.path.exists(path):
        return {}
    rows, good_lines, torn = {}, [], False
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                torn = True
                continue
            rows[row["id"]] = row
            good_lines.append(line if line.endswith("\n") else line + "\n")
    if torn:
        with open(path + ".tmp", "w") as f:
            f.writelines(good_lines)
        os.replace(path + ".tmp", path)
    return rows


def summarize(rows: Sequence[dict], num_samples: int, selections: Sequence[str]) -> dict[str, float]:
    out = {"n": len(rows)}
    if not rows:
        return out
    if num_samples == 1:
        out["pass@1"] = float(np.mean([r["scores"][0] for r in rows]))
        return out
    correct = [sum(s >= 1.0 for s in r["scores"]) for r in rows]
    k = 1
    while k <= num_samples:
        out[f"pass@{k}"] = float(np.mean([pass_at_k(num_samples, c, k) for c in correct]))
        k *= 2
    for method in selections:
        vals = [r["selected"][method] for r in rows if method in r.get("selected", {})]
        if vals:
            out[f"{method}@{num_samples}"] = float(np.mean(vals))
    return out


def evaluate_benchmark(name: str, records: list[dict], generator, scorers: Scorers, out_path: str,
                       scfg, rng, prompt_fn: Callable[[dict], str], selections: Sequence[str] = (),
                       prm_score_fn: Callable | None = None, progress: bool = True) -> dict[str, float]:
    """Generate, score and write every record not already in `out_path`; returns the summary of all rows."""
    from tqdm import tqdm

    done = _read_done(out_path)
    todo = [r for r in records if r["id"] not in done]
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc=name, unit="problem",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    step = generator.batch_size
    if todo:
        scorers.start(todo[0]["domain"])  # its workers start while the first batch compiles and generates
    with open(out_path, "a") as f:
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            prompts = [prompt_fn(r) for r in batch]
            # The key depends on the batch's first id, not on how many batches ran before (resume).
            key = jax.random.fold_in(rng, zlib.crc32(batch[0]["id"].encode()) % (2**31))
            completions = generator.generate(prompts, scfg, key)
            flat = [c for row in completions for c in row]
            n = scfg.num_samples
            gts = [r["ground_truth"] for r in batch for _ in range(n)]
            scores, answers, counts = scorers.score(batch[0]["domain"], [c.text for c in flat], gts)
            prm = prm_score_fn(prompts, completions) if prm_score_fn is not None else None
            for i, rec in enumerate(batch):
                sl = slice(i * n, (i + 1) * n)
                row = {"id": rec["id"], "benchmark": name, "prompt": prompts[i],
                       "ground_truth": rec["ground_truth"], "responses": [c.text for c in flat[sl]],
                       "answers": answers[sl], "scores": scores[sl],
                       "finish_reasons": [c.finish_reason for c in flat[sl]],
                       "num_tokens": [len(c.token_ids) for c in flat[sl]]}
                if prm is not None:
                    row["prm_scores"] = [float(s) for s, _ in prm[i]]
                    row["prm_min_step"] = [float(s) for _, s in prm[i]]
                if n > 1 and selections:
                    if rec["domain"] == "math":
                        labels = group_answers(answers[sl], scorers.math.equivalent_batch)
                    elif rec["domain"] == "synthetic":
                        labels = group_answers(answers[sl], lambda pairs: [a == b for a, b in pairs])
                    else:
                        labels = list(range(n))
                    row["selected"] = {m: scores[sl][select(m, labels, answers[sl], row.get(
                        "prm_min_step" if m == "min_step" else "prm_scores"))] for m in selections}
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
            bar.set_postfix(acc=f"{np.mean([s for s in scores]):.3f}", **{k: v for k, v in counts.items()
                                                                            if k.startswith("n_timeout")})
    bar.close()
    rows = [r for r in _read_done(out_path).values() if r["id"] in {x["id"] for x in records}]
    return summarize(rows, scfg.num_samples, selections)


def results_table(results: dict[str, dict[str, float]], domains: dict[str, str]) -> str:
    metrics = []
    for summary in results.values():
        metrics += [k for k in summary if k != "n" and k not in metrics]
    lines = ["| benchmark | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, s in results.items():
        lines.append(f"| {name} | {s['n']} | " + " | ".join(f"{100 * s[m]:.1f}" if m in s else "" for m in metrics)
                     + " |")
    for domain in ("math", "code"):
        names = [n for n in results if domains[n] == domain and results[n].get("n")]
        if len(names) > 1:
            avg = {m: np.mean([results[n][m] for n in names if m in results[n]]) for m in metrics}
            lines.append(f"| **{domain} average** | {sum(results[n]['n'] for n in names)} | "
                         + " | ".join(f"{100 * avg[m]:.1f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def model_dir_problem(path: str) -> str | None:
    """Why `path` cannot be evaluated (missing, empty, no weights), or None."""
    if not os.path.isdir(path):
        return f"{path}: no such directory"
    if _run_config(path) is not None or os.path.exists(os.path.join(path, "repirl_jax.json")):
        return None
    names = os.listdir(path)
    if not names:
        return f"{path}: the directory is empty (expected an HF model: config.json, *.safetensors, tokenizer files)"
    if "config.json" not in names:
        return f"{path}: no config.json (expected an HF model directory, our params directory or a training run)"
    if not any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
        return f"{path}: no *.safetensors weights next to config.json"
    return None


def _synthetic_records(run_config: dict | None, limit: int | None) -> list[dict]:
    """The synthetic task's test split, built with the training run's task settings."""
    if run_config is None or run_config["data"]["train"] != "synthetic":
        raise ValueError("--benchmarks=synthetic needs --checkpoint=<a training run on the synthetic task>")
    s = run_config["data"]["synthetic"]
    splits = synthetic.make_splits(seed=run_config["seed"], n_train=s["n_train"], n_val=s["n_val"],
                                   n_test=s["n_test"], num_steps=tuple(s["num_steps"]), ops=s["ops"],
                                   max_addend=s["max_addend"], max_factor=s["max_factor"], modulus=s["modulus"],
                                   num_experts=1)
    return [{**r, "domain": "synthetic", "modulus": s["modulus"]} for r in splits["test"][:limit]]


def write_localisation(prm_dir, generator, records, out_path, prompt_fn, run_config, stem, dtype="float32"):
    """Error-localisation pictures (STEM.html, STEM.png) of the first sample of each evaluated problem."""
    done = _read_done(out_path)
    rows = [done[r["id"]] for r in records if r["id"] in done][:48]
    by_id = {r["id"]: r for r in records}
    prompts = [prompt_fn(by_id[row["id"]]) for row in rows]
    comps = [[Completion(row["responses"][0], generator.encode([row["responses"][0]])[0], [], "stop")]
             for row in rows]
    scorer = make_prm_scorer(prm_dir, generator, dtype, token_level=True)
    rewards = [r[0] for r in scorer(prompts, comps)]
    texts = [row["responses"][0] for row in rows]
    raw_task = records and records[0]["domain"] == "synthetic" and prompt_fn(records[0]) == records[0]["prompt"]
    if raw_task:  # step labels
        pics = prm_eval.localisation_rows(prompts, texts, rewards, records[0]["modulus"])
    else:  # no step labels: columns by outcome, no first-error box
        pics = [{"prompt": p, "response": t, "rewards": list(map(float, r)), "first_error_span": None,
                 "correct": row["scores"][0] >= 1.0} for p, t, r, row in zip(prompts, texts, rewards, rows)]
    prm_eval.render_html(pics, stem + ".html")
    prm_eval.render_png(pics, stem + ".png")
    print(f"error localisation: {stem}.html, {stem}.png", file=sys.stderr)


# --- command line -------------------------------------------------------------------------------------

def _flags():
    from absl import flags

    cli.define_config_file("config", cli.shipped_config("eval.py"), "Config file.")
    flags.DEFINE_string("checkpoint", None, "Our params directory (repirl_jax.convert), or a training run "
                        "directory (repirl_jax.launch --workdir: its latest policy).")
    flags.DEFINE_string("hf_dir", None, "An HF model directory.")
    flags.DEFINE_string("tokenizer", None, "Tokenizer directory (default: the model directory).")
    flags.DEFINE_list("benchmarks", ["math500"], "Short names (see data/benchmarks.py) or file paths.")
    flags.DEFINE_integer("limit", None, "First N problems of each benchmark.")
    flags.DEFINE_string("output_dir", "eval_out", "Where the JSONL files and results.md go.")
    flags.DEFINE_integer("num_samples", 1, "1: greedy pass@1. N > 1: N samples at --temperature.")
    flags.DEFINE_float("temperature", 0.8, "Sampling temperature when --num_samples > 1.")
    flags.DEFINE_list("selection", [], f"With --num_samples > 1: any of {SELECTIONS}.")
    flags.DEFINE_bool("localisation", False, "With --prm_checkpoint: also write error-localisation pictures "
                      "(token rewards of the first sample of each problem) as <benchmark>_localisation.html/png.")
    flags.DEFINE_string("prm_checkpoint", None, "A training run directory (repirl_jax.launch --workdir) whose "
                        "PRM scores samples for best_of_n and prm_weighted.")
    return flags.FLAGS


def _flags_problem(flags_) -> str | None:
    """What is wrong with the command line's combination of flags, or None."""
    if bool(flags_.checkpoint) == bool(flags_.hf_dir):
        return "give exactly one of --checkpoint and --hf_dir"
    bad = [s for s in flags_.selection if s not in SELECTIONS]
    if bad:
        return f"--selection {bad}: expected any of {SELECTIONS}"
    if flags_.selection and flags_.num_samples < 2:
        return "--selection needs --num_samples > 1"
    needs_prm = [s for s in flags_.selection if s in PRM_SELECTIONS]
    if needs_prm and not flags_.prm_checkpoint:
        return f"--selection {needs_prm} needs --prm_checkpoint"
    return model_dir_problem(os.path.abspath(flags_.checkpoint or flags_.hf_dir))


def _load_policy(model_dir: str, mesh, dtype: str):
    """(params, model config in `dtype`, the run's config dict or None): a training run directory's latest
    policy (repirl_jax.launch --workdir), else an HF or orbax model directory."""

    run_config = _run_config(model_dir)
    if run_config is not None:
        params, model_cfg, _, step = hf.load_training_checkpoint(model_dir, which="policy")
        params = jax.device_put(params)
        print(f"policy of {model_dir} at step {step}", file=sys.stderr)
    else:
        params, model_cfg = hf.load_any(model_dir, mesh=mesh)
    return params, model_cfg.replace(dtype=dtype), run_config


def _load_tokenizer(flag: str, model_dir: str):
    """The tokenizer `--tokenizer` names, else a training run's own (WORKDIR/tokenizer, else what its config
    named), else the model directory's. Raises ValueError / OSError with what to pass instead."""
    tok_path = tokenizer_source(flag or "", model_dir)
    if tok_path == "synthetic":
        return synthetic.CharTokenizer()
    return load_hf_tokenizer(tok_path)


def _records_and_prompts(name: str, limit: int, tokenizer, run_config):
    """Benchmark `name`'s first `limit` records and record -> prompt text (the checkpoint's chat template
    when it has one; for "synthetic", the training run's own task and prompt format)."""
    if name == "synthetic":
        records = _synthetic_records(run_config, limit)
        task, fmt = run_config["data"]["synthetic"], run_config["data"].get("prompt_format", "raw")
        return records, lambda r: format_prompt(r["prompt"], fmt, tokenizer, task["modulus"], task["ops"])
    records = benchmarks.load(name, limit=limit)
    return records, lambda r: benchmarks.build_prompt(r, tokenizer if tokenizer.chat_template else None)


def main(argv) -> int:
    del argv
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    FLAGS = _FLAGS
    host_memory.keep_freed_host_memory()  # a checkpoint's inference: before any JAX backend starts


    cfg = FLAGS.config
    problem = _flags_problem(FLAGS)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    model_dir = os.path.abspath(FLAGS.checkpoint or FLAGS.hf_dir)
    mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    dtype = backend.compute_dtype(cfg.model.dtype)  # float32 where the backend lacks bf16 dots
    params, model_cfg, run_config = _load_policy(model_dir, mesh, dtype)
    try:
        tokenizer = _load_tokenizer(FLAGS.tokenizer, model_dir)
    except (ValueError, OSError) as e:
        print(f"error: {e} (or pass --tokenizer=DIR)", file=sys.stderr)
        return 2
    n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-cfg.eval.batch_size // n_dev) * n_dev
    try:
        generator = completions.TextGenerator(params, model_cfg, tokenizer, cfg.eval.max_prompt_len, batch_size,
                                             mesh=mesh, long_prompts=cfg.eval.long_prompts)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if FLAGS.num_samples == 1:
        scfg = sampling.SamplingConfig(max_new_tokens=cfg.eval.max_new_tokens, greedy=True)
    else:
        scfg = sampling.SamplingConfig(max_new_tokens=cfg.eval.max_new_tokens, temperature=FLAGS.temperature,
                                       top_p=cfg.eval.top_p, num_samples=FLAGS.num_samples)
    prm_score_fn = make_prm_scorer(FLAGS.prm_checkpoint, generator, dtype) if FLAGS.prm_checkpoint else None
    output_dir = os.path.abspath(FLAGS.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    scorers = Scorers(cfg.eval.math_timeout_s, cfg.eval.code_timeout_s, cfg.eval.score_workers)
    results, domains = {}, {}
    rng = jax.random.key(cfg.seed)
    start = time.time()
    try:
        for name in FLAGS.benchmarks:
            records, prompt_fn = _records_and_prompts(name, FLAGS.limit, tokenizer, run_config)
            if not records:
                continue
            domains[name] = records[0]["domain"]
            out_path = os.path.join(output_dir, f"{name}.jsonl")
            results[name] = evaluate_benchmark(name, records, generator, scorers, out_path, scfg, rng, prompt_fn,
                                               FLAGS.selection, prm_score_fn)
            if FLAGS.localisation and FLAGS.prm_checkpoint:
                write_localisation(FLAGS.prm_checkpoint, generator, records, out_path, prompt_fn, run_config,
                                   os.path.join(output_dir, f"{name}_localisation"), dtype)
    finally:
        scorers.close()
    table = results_table(results, domains)
    header = (f"model: {model_dir}; decoding: "
              + ("greedy" if FLAGS.num_samples == 1 else f"{FLAGS.num_samples} samples at T={FLAGS.temperature}")
              + f"; max_new_tokens={cfg.eval.max_new_tokens}; prompts truncated: {generator.truncated}; "
              f"{time.time() - start:.0f}s\n\n")
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(header + table)
    print(header + table)
    print(f"per-problem rows: {', '.join(os.path.join(output_dir, n + '.jsonl') for n in results)}\n"
          f"table: {os.path.join(output_dir, 'results.md')}")
    return 0


_FLAGS = None


def run() -> None:
    global _FLAGS
    _FLAGS = _flags()
    cli.run_app(main, __name__, config_flag="config")


if __name__ == "__main__":
    run()
