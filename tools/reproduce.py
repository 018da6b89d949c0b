"""Miniature reproduction: every method on the demo task with the same compute budget, over several seeds.

    python tools/reproduce.py [--seeds=0,1,2] [--iterations=60] [--methods=...] [--out=results]
    python tools/reproduce.py --from_runs=A/runs.jsonl,B/runs.jsonl --out=C   # tables of earlier runs

Each seed behaviour-clones once (configs/demo.py's warm start) and every method starts from that policy,
then runs the same number of iterations on the same prompts. Writes OUT/table.md (mean +- std over seeds of
the final greedy test accuracy, and the step-error AUROC of methods that learn a scalar PRM),
OUT/runs.jsonl (one line per run) and OUT/accuracy.png (validation accuracy against iteration). Methods with
a scalar-head or likelihood reward model (rePIRL, AIRL, Math-Shepherd; only --rerank_methods if given) also
rerank 16 samples per test prompt (T = 0.8) at N = 4, 8, 16 by mean token reward, by minimum step score and
by PRM-weighted vote (OUT/rerank.md: gain over pass@1). OUT/versus.md: rePIRL (and repirl_likelihood) minus
every other method, paired per seed with a 95% t-interval. OUT/claims.md: the paper's claims (CLAIMS) as
paired gains over seeds with a 95% t-interval and a verdict; the early-signal rows read each rePIRL run's
`early_signal_auroc` (train.early_signal_k, --early_signal_k), the test-time-training row the `ttt` method (configs/demo_ttt.py from the same seed's
rePIRL run). Runs that already finished (OUT/runs/<method>_s<seed>/summary.json) are not run again.
"""

import json
import os
import runpy
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags, logging  # noqa: E402

from repirl_jax import algorithms  # noqa: E402
from repirl_jax.evaluation.stats import claims_table  # noqa: E402

# This comparison's own settings per method on the demo task (batch sizes of the PRM step; AIRL: the
# discriminator logit (c = 1) plus the outcome (weight 1, like every other method here), one-step-corrupted
# demonstrations as extra negatives).
DEMO = {
    "prime": {"prm.micro_batch": 128},  # its PRM sees rollouts only: 32 prompts x 4
    "airl_dense": {"advantage.outcome_weight": 1.0, "airl.perturbed_negatives": True, "prm.micro_batch": 128},
    "math_shepherd": {"prm.micro_batch": 128, "shepherd.prefixes_per_call": 128},
}
# Every registered method: the settings that define it and its advantage mix (algorithms.*.required, and
# the advantage.* of its paper settings), then DEMO's; then ablations of rePIRL.
METHODS = {name: {"algo": name, **alg.required, **{k: v for k, v in alg.paper.items() if k.startswith("advantage.")},
                  **DEMO.get(name, {})} for name, alg in ((n, algorithms.get(n)) for n in algorithms.names())}
METHODS.update({
    "repirl_no_iw": {"algo": "repirl", "irl.importance_weights": False},
    "repirl_no_pseudo_expert": {"algo": "repirl", "irl.pseudo_expert": False},
    "prm_only": {"algo": "repirl", "advantage.outcome_weight": 0.0},
    "repirl_likelihood": {"algo": "repirl", "prm.head": "likelihood"},  # the PRM that checks steps (prm_quality)
    # its control: the same process reward, log pi of the BC start, never trained (prm.lr 0, no weight decay)
    "repirl_likelihood_frozen": {"algo": "repirl", "prm.head": "likelihood", "prm.lr": 0.0},
    # test-time training (configs/demo_ttt.py) from the same seed's finished rePIRL run: its policy and
    # frozen PRM, trained on the test prompts with process rewards only
    "ttt": {"algo": "repirl", **runpy.run_path(os.path.join(ROOT, "configs", "demo_ttt.py"))["SETTINGS"]},
})
TTT_FROM = "repirl"
# The paper's claims as paired comparisons over seeds: (claim, method a, field a, method b, field b);
# gain = a - b per seed ("b" None: a - 0.5, for an AUROC).
CLAIMS = (
    ("rePIRL > RLOO (test accuracy after RL)", "repirl", "test_accuracy_end", "rloo", "test_accuracy_end"),
    ("rePIRL with prm.head=likelihood > RLOO (test accuracy after RL)", "repirl_likelihood", "test_accuracy_end",
     "rloo", "test_accuracy_end"),
    ("  its PRM's IRL training helps (vs the same PRM frozen at the BC start)", "repirl_likelihood",
     "test_accuracy_end", "repirl_likelihood_frozen", "test_accuracy_end"),
    ("importance weights > uniform weights", "repirl", "test_accuracy_end", "repirl_no_iw", "test_accuracy_end"),
    ("pseudo-experts help", "repirl", "test_accuracy_end", "repirl_no_pseudo_expert", "test_accuracy_end"),
    ("PRM-only training improves over the BC start", "prm_only", "test_accuracy_end", "prm_only",
     "test_accuracy_start"),
    ("PRM-weighted vote >= majority vote at N = 16 (rePIRL PRM)", "repirl", "rerank.16.prm_weighted", "repirl",
     "rerank.16.majority"),
    ("  the same, sigmoid-transformed scores", "repirl", "rerank.16.prm_weighted:sigmoid", "repirl",
     "rerank.16.majority"),
    ("  the same, rank-transformed scores", "repirl", "rerank.16.prm_weighted:rank", "repirl", "rerank.16.majority"),
    ("  the same, likelihood PRM (repirl_likelihood)", "repirl_likelihood", "rerank.16.prm_weighted",
     "repirl_likelihood", "rerank.16.majority"),
    ("  the same, likelihood PRM, sigmoid-transformed scores", "repirl_likelihood", "rerank.16.prm_weighted:sigmoid",
     "repirl_likelihood", "rerank.16.majority"),
    ("test-time training improves accuracy", "ttt", "test_accuracy_end", "ttt", "test_accuracy_start"),
    ("early signal: PRM score of all-fail prompts predicts a later solve (AUROC > 0.5)", "repirl",
     "early_signal_auroc", None, None),
    ("  the same, likelihood PRM (repirl_likelihood)", "repirl_likelihood", "early_signal_auroc", None, None),
)
RERANK_NS = (4, 8, 16)

flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_string("config", os.path.join(ROOT, "configs", "demo.py"), "The task / model config every method starts from.")
flags.DEFINE_integer("iterations", 60, "RL iterations per run (the compute budget).")
flags.DEFINE_list("methods", list(METHODS), "Methods to run.")
flags.DEFINE_string("out", "results", "Output directory.")
flags.DEFINE_list("from_runs", [], "Only write the tables, from these runs.jsonl files (runs of earlier invocations).")
flags.DEFINE_integer("early_signal_k", 10, "train.early_signal_k of every run with a PRM (0: off).")
flags.DEFINE_list("rerank_methods", [], "Methods whose PRM reranks test samples (empty: every method with a scalar-head "
                  "or likelihood PRM but ttt).")
flags.DEFINE_integer("rerank_prompts", 0, "Test prompts reranked (16 samples each) per PRM run (0: every test prompt).")
flags.DEFINE_string("warmup_from", "", "A BC warm-up directory (a run's WORKDIR/warmup) used as EVERY seed's start "
                    "instead of one BC per seed (seeds then differ in RL only; said in the tables).")
FLAGS = flags.FLAGS


def configure(method: str, seed: int, iterations: int):
    from repirl_jax.config import load_config_file
    c = load_config_file(FLAGS.config)
    c.seed = seed
    c.train.max_iterations = iterations
    c.train.checkpoint_every = iterations
    c.train.early_signal_k = FLAGS.early_signal_k
    algorithms.apply_settings(c, METHODS[method])
    if method == "ttt":
        src = os.path.join(FLAGS.out, "runs", f"{TTT_FROM}_s{seed}")
        if not os.path.exists(os.path.join(src, "summary.json")):
            raise app.UsageError(f"method ttt starts from a finished {TTT_FROM} run of seed {seed} ({src}): "
                                 f"put {TTT_FROM} before ttt in --methods")
        c.model.path = c.prm.path = src
        c.train.early_signal_k = 0
    return c


def run_one(method, seed, out):
    from repirl_jax import launch
    from repirl_jax.evaluation import reports
    from repirl_jax.training import build
    from repirl_jax.training.metrics import read_metrics
    wd = os.path.join(out, "runs", f"{method}_s{seed}")
    done = os.path.join(wd, "summary.json")
    if os.path.exists(done):
        return json.load(open(done)), read_metrics(wd)
    warm = os.path.join(out, "warmup", f"s{seed}")
    if FLAGS.warmup_from and not os.path.exists(warm):
        shutil.copytree(FLAGS.warmup_from, warm)
    os.makedirs(wd, exist_ok=True)
    if os.path.exists(warm) and not os.path.exists(os.path.join(wd, "warmup")):
        shutil.copytree(warm, os.path.join(wd, "warmup"))
    config = configure(method, seed, FLAGS.iterations)
    result = launch.run(config, wd, progress_bar=False)
    if not os.path.exists(warm) and os.path.exists(os.path.join(wd, "warmup")):  # configs without BC have none
        shutil.copytree(os.path.join(wd, "warmup"), warm)
    summary, trainer = result.summary, result.trainer
    if ("prm" in trainer.state and not trainer.prm_head.needs_ref_logp and method != "ttt"
            and (not FLAGS.rerank_methods or method in FLAGS.rerank_methods)):
        test = trainer.tokenize_set(build.build_datasets(config, trainer.tokenizer)[2], "test")
        test = test[:FLAGS.rerank_prompts or len(test)]
        summary["rerank"] = reports.rerank_report(config, trainer, test, RERANK_NS)
        json.dump(summary, open(done, "w"), indent=2, default=str)
    return summary, read_metrics(wd)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import jax
    import numpy as np
    os.makedirs(FLAGS.out, exist_ok=True)
    # Every run compiles the same few programs: keep them in a persistent cache across runs.
    jax.config.update("jax_compilation_cache_dir", os.path.join(FLAGS.out, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    results: dict[str, list] = {}
    curves: dict[str, list] = {}
    if FLAGS.from_runs:  # tables only, from the runs.jsonl of earlier invocations (e.g. other seeds)
        for path in FLAGS.from_runs:
            for line in open(path):
                row = json.loads(line)
                if row["method"] in FLAGS.methods:
                    results.setdefault(row["method"], []).append(row)
        FLAGS.seeds = sorted({str(r["seed"]) for rows in results.values() for r in rows})
    with open(os.path.join(FLAGS.out, "runs.jsonl"), "w") as log:
        if FLAGS.from_runs:
            for rows in results.values():
                log.writelines(json.dumps(r) + "\n" for r in rows)
        for seed in ([] if FLAGS.from_runs else map(int, FLAGS.seeds)):
            for method in FLAGS.methods:
                summary, rows = run_one(method, seed, FLAGS.out)
                row = {"method": method, "seed": seed,
                       **{k: summary.get(k) for k in ("test_accuracy_start", "test_accuracy_end",
                                                      "prm_auroc_all_steps", "prm_auroc_first_error",
                                                      "time_total_s", "rerank", "early_signal_auroc",
                                                      "early_signal_prompts")}}
                log.write(json.dumps(row) + "\n")
                log.flush()
                results.setdefault(method, []).append(row)
                curves.setdefault(method, []).append([(r["iteration"], r["val_accuracy"]) for r in rows
                                                      if "val_accuracy" in r])
                print(f"{method} seed {seed}: test {row['test_accuracy_start']:.3f} -> {row['test_accuracy_end']:.3f}",
                      flush=True)

    def fmt(vals):
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        if not vals:
            return "-"
        return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals):.1f}"

    start = (f"one BC warm start ({FLAGS.warmup_from}) shared by every seed and method" if FLAGS.warmup_from
             else "BC warm start (one per seed, shared by its methods)")
    lines = [f"Same budget per method: {start}, then {FLAGS.iterations} iterations of "
             f"32 prompts x 4 rollouts; seeds {','.join(FLAGS.seeds)}; mean ± std over seeds (%).", "",
             "| method | seeds | test accuracy before RL | test accuracy after | PRM step-error AUROC | AUROC first error "
             "| early-signal AUROC |", "|---|---|---|---|---|---|---|"]
    for method, rows in results.items():
        lines.append(f"| {method} | {len(rows)} | {fmt([r['test_accuracy_start'] for r in rows])} | "
                     f"{fmt([r['test_accuracy_end'] for r in rows])} | {fmt([r['prm_auroc_all_steps'] for r in rows])} | "
                     f"{fmt([r['prm_auroc_first_error'] for r in rows])} | {fmt([r['early_signal_auroc'] for r in rows])} |")
    table = "\n".join(lines) + "\n"
    open(os.path.join(FLAGS.out, "table.md"), "w").write(table)
    print(table)
    rr = ["Reranking 16 samples per test prompt (T = 0.8), first N used; gain = accuracy of the selection "
          "minus pass@1 (points, mean ± std over seeds).", "",
          "| method | N | pass@1 | majority vote gain | mean-token-reward rerank gain | min-step rerank gain "
          "| PRM-weighted vote gain (sum; sigmoid; rank) |", "|---|---|---|---|---|---|---|"]
    for method, rows in results.items():
        runs = [r["rerank"] for r in rows if r.get("rerank")]
        for n in RERANK_NS:
            got = [run.get(str(n), run.get(n)) for run in runs]
            if not got:
                continue
            gain = lambda key: fmt([g[key] - g["pass@1"] for g in got])  # noqa: E731
            votes = "; ".join(gain(k) for k in ("prm_weighted", "prm_weighted:sigmoid", "prm_weighted:rank")
                              if all(k in g for g in got)) or "-"
            rr.append(f"| {method} | {n} | {fmt([g['pass@1'] for g in got])} | {gain('majority')} | "
                      f"{gain('best_of_n')} | {gain('min_step')} | {votes} |")
    open(os.path.join(FLAGS.out, "rerank.md"), "w").write("\n".join(rr) + "\n")
    print("\n".join(rr))
    claims = (f"The paper's claims on the demo task: paired gains over seeds {','.join(FLAGS.seeds)} ({start}; "
              f"{FLAGS.iterations} iterations), mean and 95% t-interval; holds = interval above 0, does not hold = "
              "below 0.\n\n"
              + claims_table(results, CLAIMS))
    open(os.path.join(FLAGS.out, "claims.md"), "w").write(claims)
    print(claims)
    # every method against each rePIRL variant run: paired gains in final test accuracy (a - method)
    versus = ""
    for ref in (m for m in ("repirl", "repirl_likelihood") if m in results):
        pairs = [(f"{ref} - {m}", ref, "test_accuracy_end", m, "test_accuracy_end") for m in results
                 if m not in (ref, "ttt")]
        versus += (f"{ref} minus each method, test accuracy after RL, paired over seeds (95% t-interval; holds = "
                   f"{ref} is better):\n\n" + claims_table(results, pairs) + "\n")
    open(os.path.join(FLAGS.out, "versus.md"), "w").write(versus)
    print(versus)

    if FLAGS.from_runs:
        return 0
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for method, runs in curves.items():
        its = sorted({i for run in runs for i, _ in run})
        mean = [np.mean([a for run in runs for i, a in run if i == it]) for it in its]
        ax.plot(its, mean, marker="o", label=method)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation accuracy (greedy), mean over seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(os.path.join(FLAGS.out, "accuracy.png"), dpi=110, bbox_inches="tight")
    return 0


if __name__ == "__main__":
    app.run(main)
