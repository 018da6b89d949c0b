"""Train: python -m repirl_jax.launch [--config=configs/NAME.py] [--workdir=DIR] [--config.KEY=VALUE ...]

With no --config it runs configs/demo.py (the embedded default). Relaunching the same command continues
from the last checkpoint in WORKDIR/checkpoints and ends with the same metrics as an uninterrupted run.
Writes WORKDIR/metrics.jsonl, WORKDIR/tensorboard/, WORKDIR/checkpoints/ and WORKDIR/summary.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

log = logging.getLogger("repirl_jax")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- what a config names: tokenizer, data, reward, models -----------------------------------------------

def build_tokenizer(config):
    if config.data.tokenizer == "synthetic":
        from repirl_jax.data import synthetic
        return synthetic.CharTokenizer()
    import transformers
    path = config.data.tokenizer or config.model.path
    if not path:
        raise ValueError("data.tokenizer is empty and model.path is empty: set data.tokenizer to a local "
                         "tokenizer directory (or 'synthetic')")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def format_prompt(config, tokenizer, problem: str) -> str:
    if config.data.prompt_format == "raw":
        return problem
    from repirl_jax.data import benchmarks
    instruction = benchmarks.MATH_INSTRUCTION if config.data.prompt_format == "chat_math" else \
        "Answer with one complete Python program in a single ```python code block."
    return tokenizer.apply_chat_template([{"role": "user", "content": f"{problem}\n{instruction}"}],
                                         tokenize=False, add_generation_prompt=True)


def build_datasets(config, tokenizer):
    """(train records, validation records, test records or None)."""
    if config.data.train in ("synthetic", "synthetic:test"):
        from repirl_jax.data import synthetic
        s = config.data.synthetic
        splits = synthetic.make_splits(seed=config.seed, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test,
                                       noise=s.noise, noise_kind=s.get("noise_kind", "carried"),
                                       num_steps=tuple(s.num_steps), ops=s.ops,
                                       max_addend=s.max_addend, max_factor=s.max_factor, modulus=s.modulus,
                                       num_experts=max(config.data.experts_per_prompt, 1))
        if config.data.train == "synthetic:test":  # test-time training: the test prompts are the training set
            return splits["test"], splits["val"], splits["test"]
        return splits["train"], splits["val"], splits["test"]
    from repirl_jax.data.prompts import load_prompt_set
    d = config.data
    train, report = load_prompt_set(d.train, d.prompt_field, d.answer_field, d.experts_field or None,
                                    domain=d.domain, on_bad_row=d.on_bad_row,
                                    require_experts=config.algo in ("repirl", "bc"))
    if report.skipped:
        log.warning("%s: skipped %s of %d rows, e.g. %s", d.train, report.skipped, report.rows, report.first_errors[:2])
    val = []
    if d.val:
        val, _ = load_prompt_set(d.val, d.prompt_field, d.answer_field, None, domain=d.domain,
                                 on_bad_row=d.on_bad_row, require_experts=False, limit=d.val_limit)
    for rec in train + val:
        rec["prompt"] = format_prompt(config, tokenizer, rec["prompt"])
    return train, val, None


def build_reward_fn(config):
    """reward_fn(records, responses) -> (scores, stats) for the configured domain."""
    kind = config.reward.kind
    if kind == "synthetic":
        from repirl_jax.data import synthetic

        def fn(records, texts):
            scores = [synthetic.score(t, r["ground_truth"]) for r, t in zip(records, texts)]
            return scores, {}
        return fn, None
    if kind == "math":
        from repirl_jax.rewards.math import MathScorer
        scorer = MathScorer(workers=config.reward.workers, timeout_s=config.reward.timeout_s)

        def fn(records, texts):
            res = scorer.score_batch(texts, [r["ground_truth"] for r in records])
            s = res.stats
            return res.scores, {"no_answer": s.n_no_answer, "timeout": s.n_timeout, "error": s.n_error}
        return fn, scorer.close
    if kind == "code":
        from repirl_jax.rewards.code import CodeScorer
        scorer = CodeScorer(workers=config.reward.workers, timeout_s=config.reward.timeout_s)

        def fn(records, texts):
            gts = [r["ground_truth"] for r in records]
            res = scorer.score_batch(texts, gts, fn_names=[g.get("fn_name") if isinstance(g, dict) else None
                                                           for g in gts])
            s = res.stats
            return res.scores, {"no_code": s.n_no_code, "timeout": s.n_timeout, "crash": s.n_crash}
        return fn, scorer.close
    raise ValueError(f"reward.kind={kind!r}: expected synthetic, math or code")


def model_config(config, tokenizer=None):
    """The run's QwenConfig: a training run's model_config.json, a checkpoint's config.json, or the preset
    (vocabulary: model.vocab_size, else the tokenizer's rounded up to a multiple of 8, else the preset's)."""
    from repirl_jax.models.config import QwenConfig, preset
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
    return cfg.replace(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attn_block=m.get("attn_block", 128))


def _is_run_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, "model_config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))


def build_models(config, cfg, mesh, policy_params=None):
    import jax
    from repirl_jax import hf, train
    from repirl_jax.models import heads, qwen
    seed = jax.random.key(config.seed)
    if policy_params is None:
        if config.model.path and _is_run_dir(config.model.path):  # a training run: its latest policy
            policy_params = jax.device_put(hf.load_training_checkpoint(config.model.path)[0])
        elif config.model.path:
            policy_params, _ = hf.load_any(config.model.path, mesh=mesh)
        else:
            policy_params = qwen.init_params(cfg, jax.random.fold_in(seed, 1))
    policy = {"model": policy_params}
    if config.advantage.estimator == "ppo":
        policy["value"] = heads.init_scalar_head(cfg, jax.random.fold_in(seed, 2))
    prm = None
    if train.needs_prm(config):
        head = heads.init_scalar_head(cfg, jax.random.fold_in(seed, 3))
        if config.prm.path and _is_run_dir(config.prm.path):  # a training run's learned PRM, head included
            trunk, _, saved_head, _ = hf.load_training_checkpoint(config.prm.path, which="prm")
            trunk = jax.device_put(trunk)
            if saved_head is not None:
                head = {k: jax.numpy.asarray(v, jax.numpy.float32) for k, v in saved_head.items()}
        else:
            trunk = hf.load_any(config.prm.path, mesh=mesh)[0] if config.prm.path else policy_params
        trunk = jax.tree.map(lambda x: x.copy(), trunk)
        prm = trunk if config.prm.head == "implicit" else {"trunk": trunk, "head": head}
    ref = jax.tree.map(lambda x: x.copy(), policy_params) if train.needs_ref(config) else None
    return train.Models(cfg, policy, prm, ref)


# --- the run ------------------------------------------------------------------------------------------

def _warmup_config(config):
    bc = config.copy_and_resolve_references()
    bc.algo = "bc"
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
    from repirl_jax import hf, metrics as metrics_lib, train
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
    params = trainer.state["policy"]["model"]
    hf.save_params_dir(params, cfg, path, overwrite=True)
    return params


def run(config, workdir: str, progress_bar: bool = True) -> dict:
    """Train per `config` in `workdir` (resuming if it holds checkpoints). Returns the summary dict."""
    import jax
    from repirl_jax import checkpoint, metrics as metrics_lib, train
    from repirl_jax.sharding import make_mesh

    train.validate(config, jax.device_count())
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    devices = jax.devices()[:config.mesh.devices] if config.mesh.get("devices", 0) else None
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    tokenizer = build_tokenizer(config)
    train_set, val_set, test_set = build_datasets(config, tokenizer)
    cfg = model_config(config, tokenizer)
    reward_fn, close_reward = build_reward_fn(config)
    if jax.process_index() == 0:  # what tools/convert_hf.py and evaluate need to use this run's checkpoints
        with open(os.path.join(workdir, "model_config.json"), "w") as f:
            json.dump(cfg.to_hf_dict(), f, indent=2)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2, default=str)
    started = time.time()
    summary: dict = {"config": config.to_dict(), "model_params": cfg.num_params()}
    try:
        init_policy = None
        if config.warmup_bc.steps:
            t = time.time()
            init_policy = bc_warmup(config, workdir, mesh, cfg, tokenizer, reward_fn, train_set, progress_bar)
            summary["time_warmup_s"] = time.time() - t
        trainer = train.Trainer(config, mesh, build_models(config, cfg, mesh, init_policy), tokenizer, reward_fn,
                                train_set)
        val = trainer._tokenize_set(val_set, "val") if val_set else []
        test = trainer._tokenize_set(test_set, "test") if test_set else []
        if test:
            summary["test_accuracy_start"] = trainer.evaluate(test, config.train.eval_batch)["accuracy"]
        ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep,
                                       async_save=config.train.async_checkpoint,
                                       best_metric="val_accuracy" if val else None)
        start = 0
        latest = ckpt.latest_step()
        if latest is not None:
            target = checkpoint.abstract_like(trainer.state, trainer.state_shardings)
            trainer.state, meta = ckpt.restore(latest, target=target)
            start = latest
            log.warning("resumed from %s at iteration %d", workdir, latest)
        writer = metrics_lib.MetricsWriter(workdir, resume_from=start)
        bar = metrics_lib.progress(config.train.max_iterations, initial=start) if progress_bar else None
        last_val = None
        for it in range(start + 1, config.train.max_iterations + 1):
            m = trainer.iteration(it)
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
        ckpt.wait()
        writer.close()
        summary["data_report"] = trainer.data_report
        summary["nonfinite_updates_skipped"] = trainer.nonfinite_total
        if test:
            summary["test_accuracy_end"] = trainer.evaluate(test, config.train.eval_batch)["accuracy"]
        if test and config.data.train == "synthetic" and "prm" in trainer.state:
            summary.update(prm_report(config, trainer, test, workdir))
        best = ckpt.best_step() if val else None
        summary.update(final_iteration=config.train.max_iterations, best_step=best,
                       checkpoints=os.path.join(workdir, "checkpoints"), time_total_s=time.time() - started)
        ckpt.close()
        summary["trainer"] = trainer
    finally:
        if close_reward:
            close_reward()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump({k: v for k, v in summary.items() if k != "trainer"}, f, indent=2, default=str)
    return summary


def _trace_rewards(config, trainer, prompts, texts):
    """Token rewards of the run's PRM for each (prompt, response): the scalar head's r_phi, or PRIME's
    implicit beta * (log pi_phi - log pi_ref)."""
    from repirl_jax import sampling, train
    tok = trainer.tokenizer
    p_ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    r_ids = [tok.encode(t, add_special_tokens=False)[:trainer.R] for t in texts]
    pt, pm = sampling.pad_prompts(p_ids, trainer.P, pad_token_id=trainer.pad_id, truncate="left")
    rt, rm = train.pad_right(r_ids, trainer.R, trainer.pad_id)
    traj = train.Traj(pt, pm, rt, rm)
    ref_logp = trainer._logp_in_chunks(trainer.ref, traj) if config.prm.head == "implicit" else None
    r = trainer._rewards_in_chunks(traj, ref_logp)
    return [r[i, :len(r_ids[i])] for i in range(len(texts))]


def step_reduce(algo: str) -> str:
    """How a step's score is read from token rewards: the step-end token's value for Math-Shepherd (its PRM is
    trained there alone), the mean over the step's tokens for the dense-reward PRMs."""
    return "last" if algo == "math_shepherd" else "mean"


def prm_report(config, trainer, test: list[dict], workdir: str, n_prompts: int = 128) -> dict:
    """Step-error AUROC of the final PRM on sampled test traces, and the error-localisation pictures."""
    import jax
    from repirl_jax import prm_eval
    per_call = config.rollout.prompts_per_call
    records = test[:max(per_call, (min(n_prompts, len(test)) // per_call) * per_call)]
    from repirl_jax.data import synthetic
    import numpy as np
    modulus = config.data.synthetic.modulus
    ro = trainer.rollouts(records, jax.random.key(config.seed + 7))
    # Traces: the policy's samples, plus per prompt a clean expert demonstration and one with a single
    # corrupted step (so both classes of steps exist even when the policy is nearly always right or wrong).
    rng = np.random.default_rng(config.seed)
    prompts = [r["prompt"] for r in records for _ in range(trainer.n)]
    texts = list(ro["texts"])
    for r in records:
        clean = r["experts"][0]
        prompts += [r["prompt"], r["prompt"]]
        texts += [clean, synthetic.corrupt(clean, rng, modulus=modulus)]
    rewards = _trace_rewards(config, trainer, prompts, texts)
    n_policy = len(ro["texts"])
    reduce = step_reduce(config.algo)
    out = prm_eval.step_error_auroc(prompts, texts, rewards, modulus, reduce)
    pol = prm_eval.step_error_auroc(prompts[:n_policy], texts[:n_policy], rewards[:n_policy], modulus, reduce)
    out.update(auroc_policy_samples=pol["auroc_all_steps"])
    rows = prm_eval.localisation_rows(prompts[:n_policy], texts[:n_policy], rewards[:n_policy], modulus)
    rows += prm_eval.localisation_rows(prompts[n_policy:], texts[n_policy:], rewards[n_policy:], modulus)
    html_path, png_path = os.path.join(workdir, "localisation.html"), os.path.join(workdir, "localisation.png")
    if jax.process_index() == 0:
        prm_eval.render_html(rows[:24] + rows[n_policy:n_policy + 16], html_path)
        prm_eval.render_png(rows, png_path)
    return {f"prm_{k}": v for k, v in out.items()} | {"localisation_html": html_path, "localisation_png": png_path}


def rerank_report(config, trainer, test: list[dict], ns=(4, 8, 16), temperature: float = 0.8) -> dict:
    """Test-time reranking with the run's PRM / discriminator on the synthetic test prompts: max(ns) samples
    per prompt at `temperature`; for each N the first N are ranked. Per N (fractions of prompts): pass@1 (mean
    single-sample accuracy), majority vote, best-of-N by mean token reward, best-of-N by minimum step score."""
    import jax
    import numpy as np
    from repirl_jax import evaluate, train
    from repirl_jax.data import synthetic
    per_call, big = config.rollout.prompts_per_call, max(ns)
    records = test[:max(per_call, (len(test) // per_call) * per_call)]
    ro = trainer.rollouts(records, jax.random.key(config.seed + 11), num_samples=big, temperature=temperature)
    recs = [r for r in records for _ in range(big)]
    scores = np.asarray(trainer.reward_fn(recs, ro["texts"])[0], np.float32).reshape(len(records), big)
    p_toks, p_mask = trainer._prompt_arrays(records, big)
    r = trainer._rewards_in_chunks(train.Traj(p_toks, p_mask, ro["tokens"], ro["mask"]), None)
    mean = ((r * ro["mask"]).sum(1) / np.maximum(ro["mask"].sum(1), 1)).reshape(len(records), big)
    delim = trainer.tokenizer.encode(config.steps.delimiter, add_special_tokens=False)
    low = evaluate.min_step_scores(r, ro["tokens"], ro["mask"], delim[0] if len(delim) == 1 else -1,
                                   config.steps.every, step_reduce(config.algo)).reshape(len(records), big)
    answers = [synthetic.extract_answer(t) for t in ro["texts"]]
    out = {}
    for n in ns:
        acc = {"pass@1": [], "majority": [], "best_of_n": [], "min_step": []}
        for i in range(len(records)):
            ans = answers[i * big:i * big + n]
            labels = evaluate.group_answers(ans, lambda pairs: [a == b for a, b in pairs])
            acc["pass@1"].append(scores[i, :n].mean())
            acc["majority"].append(scores[i, evaluate.select("majority", labels, ans)])
            acc["best_of_n"].append(scores[i, evaluate.select("best_of_n", labels, ans, mean[i, :n])])
            acc["min_step"].append(scores[i, evaluate.select("min_step", labels, ans, low[i, :n])])
        out[n] = {k: float(np.mean(v)) for k, v in acc.items()}
    return out


def run_stages(config, workdir: str, progress_bar: bool = True) -> dict:
    """The paper's schedule (section 4.1): a math stage, then a code stage that starts from the math stage's
    final policy (exported to WORKDIR/math/final_policy). Each stage is a resumable run in its own
    sub-directory; a finished math stage is not run again."""
    from repirl_jax import hf
    math_dir, code_dir = os.path.join(workdir, "math"), os.path.join(workdir, "code")
    final = os.path.join(math_dir, "final_policy")
    math_cfg = config.copy_and_resolve_references()
    math_cfg.stages.enabled = False
    summaries = {}
    if not os.path.exists(final):
        summaries["math"] = {k: v for k, v in run(math_cfg, math_dir, progress_bar).items() if k != "trainer"}
        hf.checkpoint_to_hf(math_dir, final)
        for name in hf.CARRIED_FILES[2:]:  # the tokenizer files, so the next stage can load them from here
            src = os.path.join(config.data.tokenizer or config.model.path or "", name)
            if os.path.exists(src):
                import shutil
                shutil.copy2(src, os.path.join(final, name))
    code_cfg = math_cfg.copy_and_resolve_references()
    code_cfg.model.path = final
    code_cfg.data.train, code_cfg.data.val = config.stages.code_train, config.stages.code_val
    code_cfg.data.tokenizer = config.data.tokenizer or config.model.path
    code_cfg.data.prompt_format, code_cfg.data.domain, code_cfg.reward.kind = "chat_code", "code", "code"
    summaries["code"] = {k: v for k, v in run(code_cfg, code_dir, progress_bar).items() if k != "trainer"}
    return {"stages": summaries, "checkpoints": os.path.join(code_dir, "checkpoints")}


# --- command line -------------------------------------------------------------------------------------

def main(argv) -> int:
    del argv
    from absl import flags
    FLAGS = flags.FLAGS
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    from repirl_jax import distributed
    multi = distributed.initialize()  # before any other JAX call; a no-op for a single process
    config = FLAGS.config
    workdir = FLAGS.workdir or os.path.join("runs", os.path.splitext(os.path.basename(FLAGS["config"].config_filename))[0])
    try:
        if config.get("stages") is not None and config.stages.enabled:
            summary = run_stages(config, workdir)
        else:
            summary = run(config, workdir)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
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
    import traceback
    import jax
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
             "prm_auroc_policy_samples": "PRM step-error AUROC on the policy's samples only"}
    for key in ("test_accuracy_start", "test_accuracy_end", "prm_auroc_all_steps", "prm_auroc_first_error",
                "prm_auroc_policy_samples", "best_step", "time_total_s", "localisation_png"):
        if key in summary and summary[key] is not None:
            v = summary[key]
            name = names.get(key, key)
            if key.startswith("test_accuracy") and isinstance(v, float):
                lines.append(f"| {name} | {100 * v:.1f}% |")
            else:
                lines.append(f"| {name} | {v:.3f} |" if isinstance(v, float) else f"| {name} | {v} |")
    lines.append(f"| metrics | {os.path.join(workdir, 'metrics.jsonl')} |")
    lines.append(f"| checkpoints | {summary.get('checkpoints')} |")
    return "\n".join(lines)


def cli() -> None:
    from absl import app, flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "demo.py"), "Training config file.")
    flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    cli()
