"""Our `evaluate` against transformers' `generate` on the same prompts: accuracy, identical responses, time.

    python tools/eval_vs_hf.py --hf_dir=DIR --benchmark=gsm8k --limit=200 --max_new_tokens=512 \
        --batch_size=16 --out=results/real_eval/qwen05_gsm8k

1. Ours: `python -m repirl_jax.evaluate --hf_dir=DIR --benchmarks=B --limit=N` (greedy, the checkpoint's
   chat template, float32 on the CPU) as a subprocess, timed as a whole (load, compilation, generation,
   grading) and by evaluate's own timer; its per-problem rows land in OUT/ours/B.jsonl.
2. transformers: the prompts evaluate recorded, in the same batches (left-padded to the batch's longest),
   greedy `generate` with the checkpoint's generation config and the same new-token budget, float32, torch
   on all cores; generation timed per batch; responses graded by the same grader (repirl_jax's math
   scorer). Rows land in OUT/hf.jsonl; a rerun resumes both sides where they stopped.
3. Prints both accuracies, the share of problems whose responses are identical (with the first differing
   token of each that is not), both times, and last `ratio_vs_hf=<transformers generation seconds / our
   evaluate seconds>`; OUT/summary.json holds the same. The sides run minutes apart, so the machine's speed
   (`bench_common.machine_speed`: a BLAS matmul and a memory copy) is printed before, between and after them.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from bench_common import cpu_model, machine_speed  # noqa: E402

flags.DEFINE_string("hf_dir", None, "HF model directory (e.g. built by python -m repirl_jax.real_models NAME).")
flags.DEFINE_string("benchmark", "gsm8k", "A math benchmark short name (or JSONL path) evaluate knows.")
flags.DEFINE_integer("limit", 24, "The first N problems.")
flags.DEFINE_integer("max_new_tokens", 256, "New-token budget on both sides.")
flags.DEFINE_integer("batch_size", 8, "Prompts per batch on both sides.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_enum("sides", "both", ["both", "ours", "hf"], "Run only one side (the other is read if present).")
flags.DEFINE_bool("explain", True, "For each problem whose responses differ: both models' two best next tokens and "
                  "logits at the first differing position, given the common prefix (a near-tie = float32 rounding).")
flags.mark_flags_as_required(["hf_dir", "out"])
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ours_time_file(out: str) -> str:
    """Where our side's time lands once all its rows are there (a rerun reads it instead of evaluating)."""
    return os.path.join(out, "ours_time.json")


def earlier_ours_time(out: str) -> dict | None:
    """Our side's time from an earlier run of this tool on OUT, or None."""
    if not os.path.exists(ours_time_file(out)):
        return None
    with open(ours_time_file(out)) as f:
        return json.load(f)


def run_ours(out: str) -> dict:
    """evaluate as a subprocess (one CPU device), unless its rows are all there; its wall time."""
    done = earlier_ours_time(out)
    if done is not None:
        return done
    cmd = [sys.executable, "-m", "repirl_jax.evaluate", f"--hf_dir={FLAGS.hf_dir}", f"--benchmarks={FLAGS.benchmark}",
           f"--limit={FLAGS.limit}", f"--output_dir={os.path.join(out, 'ours')}",
           f"--config.eval.batch_size={FLAGS.batch_size}", f"--config.eval.max_new_tokens={FLAGS.max_new_tokens}"]
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "JAX_PLATFORMS": "cpu"}
    print("ours:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with open(os.path.join(out, "ours.log"), "w") as f:  # evaluate's own output (its progress bar: per batch)
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"evaluate failed ({r.returncode}):\n{r.stderr[-3000:]}")
    header = next(line for line in r.stdout.splitlines() if line.startswith("model:"))
    own = float(header.rsplit(";", 1)[1].strip().rstrip("s"))
    result = {"wall_s": wall, "evaluate_timer_s": own, "command": " ".join(cmd[1:])}
    with open(ours_time_file(out), "w") as f:
        json.dump(result, f)
    return result


def run_hf(rows: list[dict], out: str) -> dict:
    """transformers' greedy generate on evaluate's prompts, batch by batch (resumable); graded rows."""
    import torch
    import transformers

    from repirl_jax.rewards.scorers import Scorers
    path = os.path.join(out, "hf.jsonl")
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            done = {r["id"]: r for r in map(json.loads, f)}
    todo = [r for r in rows if r["id"] not in done]
    if not todo:
        return done
    torch.set_num_threads(os.cpu_count() or 1)
    tok = transformers.AutoTokenizer.from_pretrained(FLAGS.hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(FLAGS.hf_dir, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    pad = tok.pad_token_id
    scorers = Scorers(10.0, 10.0, 2)
    order = {r["id"]: i for i, r in enumerate(rows)}
    try:
        with open(path, "a") as f:
            # the same batches as evaluate's: consecutive problems in file order
            batches = {}
            for r in todo:
                batches.setdefault(order[r["id"]] // FLAGS.batch_size, []).append(r)
            for b, batch in sorted(batches.items()):
                ids = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in batch]
                width = max(map(len, ids))
                tokens = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
                mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
                start = time.perf_counter()
                with torch.no_grad():
                    new = model.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=FLAGS.max_new_tokens,
                                         do_sample=False, pad_token_id=pad)[:, width:].tolist()
                seconds = time.perf_counter() - start
                texts, lengths = [], []
                for row in new:
                    end = next((i for i, t in enumerate(row) if t in eos), None)
                    kept = row if end is None else row[:end]
                    texts.append(tok.decode(kept, skip_special_tokens=True))
                    lengths.append(len(row) if end is None else end + 1)
                scores, answers, _ = scorers.score("math", texts, [r["ground_truth"] for r in batch])
                for i, r in enumerate(batch):
                    rec = {"id": r["id"], "response": texts[i], "score": scores[i], "answer": answers[i],
                           "num_tokens": lengths[i], "token_ids": new[i][:lengths[i]],
                           "batch_seconds": seconds if i == 0 else 0.0}
                    done[r["id"]] = rec
                    f.write(json.dumps(rec) + "\n")
                f.flush()
                print(f"hf: batch {b} ({len(batch)} problems, {max(lengths)} steps) {seconds:.1f}s", flush=True)
    finally:
        scorers.close()
    return done


def explain(diffs: list[dict], rows: dict, hf_rows: dict) -> None:
    """Both sides' top-2 next-token logits after the longest common prefix of each differing pair, in float32:
    our model (forward pass) and transformers' on the same prompt + prefix token ids."""
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from repirl_jax.checkpoints import hf
    from repirl_jax.models import qwen
    tok = transformers.AutoTokenizer.from_pretrained(FLAGS.hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(FLAGS.hf_dir, dtype=torch.float32).eval()
    params, cfg = hf.load_hf_params(FLAGS.hf_dir, dtype="float32")
    for d in diffs:
        ids_hf = hf_rows[d["id"]]["token_ids"]
        ids_ours = tok(rows[d["id"]]["responses"][0], add_special_tokens=False)["input_ids"]
        k = first_mismatch(ids_ours, ids_hf)
        seq = tok(rows[d["id"]]["prompt"], add_special_tokens=False)["input_ids"] + ids_hf[:k]
        x = np.asarray([seq], np.int32)
        mask = np.ones_like(x)
        h, _ = qwen.forward(params, cfg, jnp.asarray(x), qwen.positions_from_mask(jnp.asarray(mask)), jnp.asarray(mask))
        ours = np.asarray(qwen.lm_logits(params, cfg, h[:, -1:]))[0, 0]
        with torch.no_grad():
            theirs = model(torch.tensor(x, dtype=torch.long)).logits[0, -1].numpy()
        top = lambda v: [(tok.decode([int(i)]), round(float(v[i]), 4)) for i in np.argsort(-v)[:2]]  # noqa: E731
        d.update(position=k, ours_top2=top(ours), hf_top2=top(theirs))
        print(f"  {d['id']}: at response token {k}: ours {d['ours_top2']}, transformers {d['hf_top2']}")


def first_mismatch(x: list[int], y: list[int]) -> int:
    """Index of the first differing token id (the shorter length where one is a prefix of the other)."""
    return next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))


def first_difference(a: str, b: str, tok) -> int:
    return first_mismatch(tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"])


def main(argv):
    del argv
    out = os.path.abspath(FLAGS.out)
    os.makedirs(out, exist_ok=True)
    print(f"cpu: {cpu_model()}", flush=True)
    speeds = {"before ours": machine_speed()}
    ours_time = run_ours(out) if FLAGS.sides in ("both", "ours") else earlier_ours_time(out)
    speeds["after ours, before transformers"] = machine_speed()
    rows_file = os.path.join(out, "ours", f"{os.path.basename(FLAGS.benchmark).split('.')[0]}.jsonl")
    with open(rows_file) as f:
        rows = [json.loads(line) for line in f]
    if FLAGS.sides == "ours":
        return 0
    hf_rows = run_hf(rows, out)
    speeds["after transformers"] = machine_speed()
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(FLAGS.hf_dir)
    same, diffs = 0, []
    for r in rows:
        a, b = r["responses"][0], hf_rows[r["id"]]["response"]
        if a == b:
            same += 1
        else:
            diffs.append({"id": r["id"], "first_differing_token": first_difference(a, b, tok),
                          "ours_tokens": r["num_tokens"][0], "hf_tokens": hf_rows[r["id"]]["num_tokens"],
                          "ours_score": r["scores"][0], "hf_score": hf_rows[r["id"]]["score"]})
    n = len(rows)
    ours_acc = sum(r["scores"][0] for r in rows) / n
    hf_acc = sum(hf_rows[r["id"]]["score"] for r in rows) / n
    hf_s = sum(hf_rows[r["id"]]["batch_seconds"] for r in rows)
    ours_time = ours_time or {}
    summary = {"hf_dir": FLAGS.hf_dir, "benchmark": FLAGS.benchmark, "problems": n,
               "max_new_tokens": FLAGS.max_new_tokens, "batch_size": FLAGS.batch_size, "cpu": cpu_model(),
               "ours_accuracy": ours_acc, "hf_accuracy": hf_acc, "identical": same, "identical_share": same / n,
               "differences": diffs, "ours_evaluate_wall_s": ours_time.get("wall_s"),
               "ours_evaluate_timer_s": ours_time.get("evaluate_timer_s"), "hf_generate_s": hf_s,
               "ours_tokens": sum(r["num_tokens"][0] for r in rows),
               "hf_tokens": sum(hf_rows[r["id"]]["num_tokens"] for r in rows), "machine_speed": speeds}
    if diffs and FLAGS.explain:
        print("why they differ (same prefix, both models' two best next tokens; a gap near 0 is a float32 tie):")
        explain(diffs, {r["id"]: r for r in rows}, hf_rows)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"{FLAGS.benchmark}, {n} problems, greedy, {FLAGS.max_new_tokens} new tokens, batch {FLAGS.batch_size}")
    print(f"accuracy: ours {100 * ours_acc:.1f}%, transformers {100 * hf_acc:.1f}%")
    print(f"identical responses: {same}/{n} ({100 * same / n:.1f}%)")
    for d in diffs:
        print(f"  differs: {d}")
    if ours_time:
        print(f"time: our evaluate {ours_time['wall_s']:.1f} s wall (its timer {ours_time['evaluate_timer_s']:.0f} s: "
              f"load, compile, generation, grading); transformers generate {hf_s:.1f} s (generation only)")
        print("machine speed (a drift between the sides moves the ratio): " +
              "; ".join(f"{k}: {v}" for k, v in speeds.items()))
        print(f"ratio_vs_hf={hf_s / ours_time['wall_s']:.2f}")
    return 0


if __name__ == "__main__":
    app.run(main)
