"""Test-time scaling curve of a synthetic-task training run: accuracy against N for majority vote, best-of-N
by the run's PRM and PRM-weighted vote (METHOD.md section 5), plus pass@N.

    python tools/test_time_scaling.py --run=runs/demo [--ns=2,4,8,16] [--out=results/tts]

Runs `python -m repirl_jax.evaluate` once per N (temperature 0.8), then writes OUT/tts.md and OUT/tts.png.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("run", None, "A training run directory on the synthetic task (repirl_jax.launch --workdir).")
flags.DEFINE_list("ns", ["2", "4", "8", "16"], "Numbers of samples.")
flags.DEFINE_string("out", "results/tts", "Output directory.")
flags.mark_flag_as_required("run")
FLAGS = flags.FLAGS
METHODS = ("majority", "best_of_n", "prm_weighted")


def main(argv):
    del argv
    os.makedirs(FLAGS.out, exist_ok=True)
    rows = []
    for n in map(int, FLAGS.ns):
        out = os.path.join(FLAGS.out, f"n{n}")
        cmd = [sys.executable, "-m", "repirl_jax.evaluate", f"--checkpoint={FLAGS.run}", "--benchmarks=synthetic",
               f"--output_dir={out}", f"--num_samples={n}", "--temperature=0.8", f"--selection={','.join(METHODS)}",
               f"--prm_checkpoint={FLAGS.run}", "--config.eval.max_new_tokens=32", "--config.eval.max_prompt_len=16",
               "--config.eval.batch_size=100", "--config.model.dtype=float32", "--config.mesh.fsdp=1"]
        subprocess.run(cmd, check=True, capture_output=True)
        runs = [json.loads(line) for line in open(os.path.join(out, "synthetic.jsonl"))]
        row = {"n": n, "pass@1": sum(sum(r["scores"]) / n for r in runs) / len(runs),
               "pass@n": sum(max(r["scores"]) for r in runs) / len(runs),
               **{m: sum(r["selected"][m] for r in runs) / len(runs) for m in METHODS}}
        rows.append(row)
        print(row, flush=True)
    lines = ["| N | pass@1 | pass@N | majority | best-of-N (PRM) | PRM-weighted vote |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['n']} | {100 * r['pass@1']:.1f} | {100 * r['pass@n']:.1f} | {100 * r['majority']:.1f} | "
              f"{100 * r['best_of_n']:.1f} | {100 * r['prm_weighted']:.1f} |" for r in rows]
    open(os.path.join(FLAGS.out, "tts.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["n"] for r in rows]
    for key, label in (("pass@n", "pass@N"), ("majority", "majority vote"), ("best_of_n", "best-of-N (PRM)"),
                       ("prm_weighted", "PRM-weighted vote"), ("pass@1", "single sample")):
        ax.plot(ns, [100 * r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N samples (T = 0.8)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(os.path.join(FLAGS.out, "tts.png"), dpi=110, bbox_inches="tight")
    return 0


if __name__ == "__main__":
    app.run(main)
