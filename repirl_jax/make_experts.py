r"""Expert demonstrations from your own resources: the training JSONL that `repirl_jax.launch` reads.

    python -m repirl_jax.make_experts --prompts=math_train --model=/models/Qwen2.5-7B-Instruct --k=8 --out=experts/
    python -m repirl_jax.make_experts --prompts=train.jsonl --responses=generated_elsewhere.jsonl --out=experts/

--prompts is a prompt file (JSONL / Parquet / tfds:NAME, fields named by --prompt_field / --answer_field /
--id_field) or the short name of a shipped benchmark (`repirl_jax.data.benchmarks`: math_train, math500,
gsm8k, leetcode, ...), read in its own layout (the field flags are not used; rows without a ground truth are
skipped and counted; a code benchmark needs --domain=code).

Samples `k` responses per prompt from a local model (an HF directory, our params directory or a training
run directory, with our sampler), or reads responses made elsewhere (JSONL rows with `id` or `prompt`, and
`response` or `responses`). Grades them with the rewards training uses (math-verify for math, the sandbox
for code), keeps up to `experts_per_prompt` correct ones per prompt, and writes into OUT:
    train.jsonl       {"id", "prompt", "ground_truth", "experts": [...]} for prompts with a correct response
    val.jsonl         the validation split (a stable hash of the id: the same prompts on every rerun)
    unsolved.jsonl    training-split prompts with no correct response (dropped from train.jsonl)
    graded.jsonl      every prompt's responses and scores, appended batch by batch: a rerun resumes
    coverage.json     per-prompt coverage: how many prompts have 0, 1, ... correct responses
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import zlib
from typing import Callable, Sequence

import jax

from repirl_jax import cli as cli_lib
from repirl_jax.checkpoints import hf
from repirl_jax.checkpoints.run_dirs import is_run_dir as _is_run_dir
from repirl_jax.checkpoints.run_dirs import load_hf_tokenizer, tokenizer_source
from repirl_jax.data import benchmarks
from repirl_jax.data.prompts import PROMPT_FORMATS, LoadReport, format_prompt, load_prompt_set
from repirl_jax.generation import completions, sampling
from repirl_jax.rewards.scorers import Scorers
from repirl_jax.runtime import backend, host_memory
from repirl_jax.runtime.sharding import make_mesh


@dataclasses.dataclass
class Options:
    prompts: str
    out: str
    model: str = ""  # sample from this model ...
    responses: str = ""  # ... or read these responses
    prompt_field: str = "prompt"
    answer_field: str = "ground_truth"
    id_field: str = "id"
    domain: str = "math"  # math | code
    prompt_format: str = "chat_math"  # raw | chat_math | chat_code: how prompts are shown to --model
    tokenizer: str = ""  # default: the model's (a training run: its own)
    k: int = 8
    experts_per_prompt: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_len: int = 1024
    max_new_tokens: int = 1024
    batch_size: int = 16
    val_fraction: float = 0.05
    limit: int | None = None
    where: tuple[str, ...] = ()  # conditions on a row's fields, e.g. ("difficulty<=2",): only matching prompts
    seed: int = 0
    dtype: str = "bfloat16"  # compute dtype; float32 where the backend lacks bf16 dots
    score_workers: int = 2
    timeout_s: float = 10.0
    on_bad_row: str = "error"
    progress: bool = True


def is_validation(record_id: str, val_fraction: float) -> bool:
    """The split of a prompt: a stable hash of its id, so that a rerun (or a resumed run) splits the same."""
    return (zlib.crc32(record_id.encode()) % 10_000) < round(val_fraction * 10_000)


_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}


def parse_where(conditions: Sequence[str]) -> Callable[[dict], bool]:
    """A predicate on a prompt record from conditions "FIELD<=VALUE" (ops <=, >=, ==, !=, <, >; all must hold).
    FIELD is a column of the prompt file (the record's metadata); VALUE compares as a number where both
    sides are numbers, else as text. A record without FIELD does not match."""
    parsed = []
    for cond in conditions:
        m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*", cond)
        if not m:
            raise ValueError(f"--where={cond!r}: expected FIELD<=VALUE (ops: {', '.join(_OPS)})")
        parsed.append(m.groups())

    def number(x):
        try:
            return float(x)
        except (TypeError, ValueError):
            return None

    def ok(record: dict) -> bool:
        fields = {**record.get("metadata", {}), **record}
        for name, op, value in parsed:
            if fields.get(name) is None:
                return False
            a, b = number(fields[name]), number(value)
            if not (_OPS[op](a, b) if a is not None and b is not None else _OPS[op](str(fields[name]), value)):
                return False
        return True
    return ok


def select_experts(responses: Sequence[str], scores: Sequence[float], keep: int) -> list[str]:
    """Up to `keep` distinct correct responses (score >= 1), in sampling order."""
    out: list[str] = []
    for r, s in zip(responses, scores):
        if s >= 1.0 and r.strip() and r not in out:
            out.append(r)
        if len(out) == keep:
            break
    return out


def _read_graded(path: str) -> dict[str, dict]:
    """Rows already graded (resume); a torn last line is dropped."""
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                rows[row["id"]] = row
    return rows


def read_external_responses(path: str, records: list[dict]) -> dict[str, list[str]]:
    """id -> responses from a JSONL of responses made elsewhere. A row names its prompt by `id` or by the
    exact `prompt` text and carries `response` (a string) or `responses` (a list); rows of one prompt add up."""
    by_prompt = {r["prompt"]: r["id"] for r in records}
    ids = {r["id"] for r in records}
    out: dict[str, list[str]] = {}
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not valid JSON ({e.msg})") from e
            rid = str(row["id"]) if row.get("id") is not None and str(row["id"]) in ids else by_prompt.get(row.get("prompt"))
            if rid is None:
                raise ValueError(f"{path} line {n}: matches no prompt (by 'id' or the exact 'prompt' text)")
            got = row.get("responses", row.get("response"))
            got = [got] if isinstance(got, str) else got
            if not isinstance(got, list) or not all(isinstance(x, str) for x in got):
                raise ValueError(f"{path} line {n}: expected 'response' (a string) or 'responses' (strings)")
            out.setdefault(rid, []).extend(got)
    return out


def model_sampler(opts: Options) -> tuple[Callable[[list[dict]], list[list[str]]], Callable[[str], str]]:
    """(sample(records) -> k responses each, format(problem) -> the prompt the model sees) for opts.model."""
    mesh = make_mesh(1, -1, 1)
    if _is_run_dir(opts.model):
        params, cfg, _, _ = hf.load_training_checkpoint(opts.model, which="policy")
        params = jax.device_put(params)
    else:
        params, cfg = hf.load_any(opts.model, mesh=mesh)
    cfg = cfg.replace(dtype=backend.compute_dtype(opts.dtype))
    tok = load_hf_tokenizer(tokenizer_source(opts.tokenizer, opts.model))
    n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    gen = completions.TextGenerator(params, cfg, tok, opts.max_prompt_len, -(-opts.batch_size // n_dev) * n_dev,
                                   mesh=mesh)
    scfg = sampling.SamplingConfig(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature,
                                   top_p=opts.top_p, num_samples=opts.k)

    def fmt(problem: str) -> str:
        return format_prompt(problem, opts.prompt_format, tok)

    def sample(batch: list[dict]) -> list[list[str]]:
        # The key depends on the batch's first id only, so a resumed run samples what it would have.
        key = jax.random.fold_in(jax.random.key(opts.seed), zlib.crc32(batch[0]["id"].encode()) % (2**31))
        return [[c.text for c in row] for row in gen.generate([fmt(r["prompt"]) for r in batch], scfg, key)]
    return sample, fmt


def load_prompts(opts: Options) -> tuple[list[dict], LoadReport]:
    """(records, LoadReport) of --prompts: a prompt file read with the field flags, or a benchmark short name
    (its shipped file in its own layout; rows without a ground truth cannot be graded: skipped and counted).
    Records as `load_prompt_set` gives them, with no demonstrations. A file of that name wins over the name."""
    name = None if os.path.exists(opts.prompts) else benchmarks.short_name(opts.prompts)
    if name is None:
        return load_prompt_set(opts.prompts, opts.prompt_field, opts.answer_field, None, opts.id_field,
                               domain=opts.domain, on_bad_row=opts.on_bad_row, require_experts=False,
                               limit=opts.limit)
    rows = benchmarks.load(name, on_empty="keep")
    if rows and rows[0]["domain"] != opts.domain:
        raise ValueError(f"--prompts={opts.prompts} is a {rows[0]['domain']} benchmark: give "
                         f"--domain={rows[0]['domain']}")
    report, records = LoadReport(benchmarks.benchmark_path(name)), []
    for r in rows:
        if opts.limit is not None and len(records) >= opts.limit:
            break
        report.rows += 1
        if r["metadata"].get("ground_truth_missing"):
            report.skip("no ground truth", f"{r['metadata']['source']}: empty or null ground truth")
            continue
        records.append({"id": r["id"], "prompt": r["problem"], "ground_truth": r["ground_truth"], "experts": [],
                        "domain": r["domain"], "metadata": r["metadata"]})
        report.kept += 1
    return records, report


def run(opts: Options, sample: Callable[[list[dict]], list[list[str]]] | None = None) -> dict:
    """Build OUT (see module docstring); returns the coverage report. `sample` overrides opts.model."""
    from tqdm import tqdm

    if bool(opts.model) == bool(opts.responses) and sample is None:
        raise ValueError("give exactly one of --model (sample from it) and --responses (a JSONL made elsewhere)")
    if opts.domain not in ("math", "code"):
        raise ValueError(f"--domain={opts.domain!r}: expected math or code")
    records, report = load_prompts(dataclasses.replace(opts, limit=None) if opts.where else opts)
    if opts.where:  # the first `limit` prompts that match
        records = [r for r in records if parse_where(opts.where)(r)][:opts.limit]
    if not records:
        raise ValueError(f"{opts.prompts}: no usable prompts ({report.skipped or 'empty file'}"
                         f"{'; --where ' + ' '.join(opts.where) + ' matched none' if opts.where else ''})")
    os.makedirs(opts.out, exist_ok=True)
    graded_path = os.path.join(opts.out, "graded.jsonl")
    done = _read_graded(graded_path)
    todo = [r for r in records if r["id"] not in done]
    external = read_external_responses(opts.responses, records) if opts.responses else None
    if sample is None and external is None:
        sample, _ = model_sampler(opts)
    scorers = Scorers(opts.timeout_s, opts.timeout_s, opts.score_workers)
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="experts", unit="prompt",
               disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)
    try:
        with open(graded_path, "a") as f:
            for start in range(0, len(todo), opts.batch_size):
                batch = todo[start:start + opts.batch_size]
                responses = [external.get(r["id"], []) for r in batch] if external is not None else sample(batch)
                flat = [t for row in responses for t in row]
                gts = [r["ground_truth"] for r, row in zip(batch, responses) for _ in row]
                scores = scorers.score(opts.domain, flat, gts)[0] if flat else []
                at = 0
                for r, row in zip(batch, responses):
                    s = [float(x) for x in scores[at:at + len(row)]]
                    at += len(row)
                    f.write(json.dumps({"id": r["id"], "responses": row, "scores": s,
                                        "n_correct": int(sum(x >= 1.0 for x in s))}) + "\n")
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(batch))
                bar.set_postfix(solved=sum(1 for row in _read_graded(graded_path).values() if row["n_correct"]))
    finally:
        bar.close()
        scorers.close()
    return write_outputs(opts, records, _read_graded(graded_path), report)


def write_outputs(opts: Options, records: list[dict], graded: dict[str, dict], report) -> dict:
    """train.jsonl, val.jsonl, unsolved.jsonl and coverage.json from the graded rows."""
    train, val, unsolved = [], [], []
    histogram: dict[int, int] = {}
    for r in records:
        g = graded[r["id"]]
        histogram[g["n_correct"]] = histogram.get(g["n_correct"], 0) + 1
        experts = select_experts(g["responses"], g["scores"], opts.experts_per_prompt)
        row = {"id": r["id"], "prompt": r["prompt"], "ground_truth": r["ground_truth"], "experts": experts}
        if is_validation(r["id"], opts.val_fraction):
            val.append(row)
        elif experts:
            train.append(row)
        else:
            unsolved.append({**row, "n_responses": len(g["responses"])})
    for name, rows in (("train", train), ("val", val), ("unsolved", unsolved)):
        tmp = os.path.join(opts.out, f"{name}.jsonl.tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(tmp, os.path.join(opts.out, f"{name}.jsonl"))
    n_train_split = len(train) + len(unsolved)
    coverage = {
        "prompts": len(records), "bad_rows_skipped": report.skipped,
        "responses_graded": sum(len(graded[r["id"]]["responses"]) for r in records),
        "prompts_with_a_correct_response": sum(1 for r in records if graded[r["id"]]["n_correct"]),
        "correct_responses_per_prompt": {str(k): histogram[k] for k in sorted(histogram)},
        "train_prompts": len(train), "train_experts": sum(len(r["experts"]) for r in train),
        "val_prompts": len(val), "unsolved_dropped": len(unsolved),
        "train_coverage": len(train) / n_train_split if n_train_split else 0.0,
        "files": {n: os.path.abspath(os.path.join(opts.out, f"{n}.jsonl")) for n in ("train", "val", "unsolved")},
    }
    with open(os.path.join(opts.out, "coverage.json"), "w") as f:
        json.dump(coverage, f, indent=2)
    return coverage


def _coverage_table(c: dict) -> str:
    lines = ["| result | value |", "|---|---|", f"| prompts | {c['prompts']} |",
             f"| responses graded | {c['responses_graded']} |",
             f"| prompts with a correct response | {c['prompts_with_a_correct_response']} |",
             "| correct responses per prompt: number of prompts | "
             + ", ".join(f"{k}: {v}" for k, v in c["correct_responses_per_prompt"].items()) + " |",
             f"| train prompts (demonstrations) | {c['train_prompts']} ({c['train_experts']}) |",
             f"| validation prompts | {c['val_prompts']} |",
             f"| unsolved training prompts dropped | {c['unsolved_dropped']} |"]
    lines += [f"| {n} | {p} |" for n, p in c["files"].items()]
    return "\n".join(lines)


def main(argv) -> int:
    del argv
    from absl import flags, logging
    logging.set_verbosity(logging.WARNING)
    F = flags.FLAGS
    host_memory.keep_freed_host_memory()  # a checkpoint's sampling: before any JAX backend starts
    opts = Options(**{f.name: F[f.name].value for f in dataclasses.fields(Options) if f.name in F})
    opts.where = tuple(opts.where)
    try:
        coverage = run(opts)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(_coverage_table(coverage))
    return 0


def cli() -> None:
    from absl import flags

    d = Options(prompts="", out="")
    flags.DEFINE_string("prompts", None, "Prompt set: JSONL / Parquet / tfds:NAME with a prompt and an answer field, "
                        "or a shipped benchmark's short name (math_train, gsm8k, ...: its own fields).")
    flags.DEFINE_string("out", None, "Output directory (train.jsonl, val.jsonl, ...); a rerun resumes in it.")
    flags.DEFINE_string("model", "", "Sample from this model: an HF, repirl_jax params or training run directory.")
    flags.DEFINE_string("responses", "", "Or: a JSONL of responses made elsewhere (id or prompt; response(s)).")
    flags.DEFINE_string("prompt_field", d.prompt_field, "Prompt field of --prompts (MATH: problem).")
    flags.DEFINE_string("answer_field", d.answer_field, "Gold answer (or tests) field of --prompts (MATH: answer).")
    flags.DEFINE_string("id_field", d.id_field, "Id field of --prompts (default ids: row-N).")
    flags.DEFINE_enum("domain", d.domain, ["math", "code"], "Which reward grades the responses.")
    flags.DEFINE_enum("prompt_format", d.prompt_format, list(PROMPT_FORMATS),
                      "How --model sees a prompt (as launch's data.prompt_format).")
    flags.DEFINE_string("tokenizer", d.tokenizer, "Tokenizer directory (default: --model's).")
    flags.DEFINE_integer("k", d.k, "Responses sampled per prompt.")
    flags.DEFINE_integer("experts_per_prompt", d.experts_per_prompt, "Correct responses kept per prompt.")
    flags.DEFINE_float("temperature", d.temperature, "Sampling temperature.")
    flags.DEFINE_float("top_p", d.top_p, "Nucleus sampling threshold.")
    flags.DEFINE_integer("max_prompt_len", d.max_prompt_len, "Prompt tokens (longer prompts keep their end).")
    flags.DEFINE_integer("max_new_tokens", d.max_new_tokens, "Response tokens.")
    flags.DEFINE_integer("batch_size", d.batch_size, "Prompts per sampler call and per resume step.")
    flags.DEFINE_float("val_fraction", d.val_fraction, "Fraction of prompts in val.jsonl (by a hash of the id).")
    flags.DEFINE_integer("limit", None, "First N prompts only (with --where: the first N that match).")
    flags.DEFINE_multi_string("where", [], "Only prompts whose row satisfies FIELD<=VALUE (also >=, ==, !=, <, >); "
                              "repeat for several. E.g. --where=difficulty<=1 on MATH train.")
    flags.DEFINE_integer("seed", d.seed, "Sampling seed.")
    flags.DEFINE_enum("dtype", d.dtype, ["bfloat16", "float32"], "Compute dtype (float32 where bf16 dots are "
                      "unsupported).")
    flags.DEFINE_integer("score_workers", d.score_workers, "Grading worker processes.")
    flags.DEFINE_float("timeout_s", d.timeout_s, "Time limit per graded response.")
    flags.DEFINE_enum("on_bad_row", d.on_bad_row, ["error", "skip"], "Bad rows of --prompts: fail or skip.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.mark_flags_as_required(["prompts", "out"])
    cli_lib.run_app(main, __name__)


if __name__ == "__main__":
    cli()
