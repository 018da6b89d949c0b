"""Evaluation benchmarks: one record layout for every shipped file and for generic JSONL / JSON / Parquet.

    records = load("math500")                   # short name -> repirl_jax/data/benchmark_files/math/math500.jsonl
    records = load("leetcode", limit=8)         # the first 8 rows
    records = load("my.jsonl", prompt_field="question", answer_field="answer", id_field=None)
    text = build_prompt(records[0], tokenizer)  # chat-templated prompt ending in the assistant turn

Every record is a plain dict:

    {"id": str,             # the file's own id field when it has one, else "<benchmark>-<row index>"
     "benchmark": str,      # short name (or the file stem / `benchmark=` for generic files)
     "domain": "math" | "code",
     "problem": str,        # the problem text as the file gives it (no instruction added)
     "ground_truth": ...,   # math: str; code: dict, see below
     "metadata": dict}      # every other field of the row, plus "source": "<file name>:<line or row>"

Math ground truth is a string: `answer` (math500, aime24, amc23, math_train), the last ``\\boxed{}`` of
`solution` (minerva), the `final_answer` list joined with ", " (olympiadbench; the list itself is kept in
metadata["final_answer"]), the text after ``####`` (gsm8k; thousands separators such as "1,600" are kept
as the file writes them, the full worked solution is in metadata["solution"]). Numbers stored as JSON numbers
(amc23 writes 27.0) become their plain decimal form ("27"); the raw value is kept in metadata["raw_answer"].

Code ground truth is a dict a code scorer can run directly:

    LeetCode (PRIME):  {"format": "assert",
                        "test": str,          # the file's `test` text: `my_solution = Solution()` + ~100 asserts
                        "class_name": "Solution",
                        "entry_point": str,   # the method the asserts call, e.g. "minimumPushes"
                        "starter_code": str,  # class/method stub from the prompt (may define ListNode first)
                        "prelude": str}       # imports the stubs and tests assume (typing.List, ...) plus any
                                              # helper classes the starter defines before `class Solution`
        program = prelude + "\\n" + generated_code + "\\n" + test ; it passes iff it exits without error.
    LiveCodeBench:     {"format": "io",
                        "testtype": "stdin" | "functional",
                        "tests": [{"input": str, "output": str, "testtype": str}, ...],
                        "fn_name": str | None,     # functional: the method of class Solution to call
                        "class_name": "Solution" | None,
                        "starter_code": str,        # "" for stdin problems
                        "prelude": str}
        stdin: feed `input` to the program's standard input and compare standard output with `output`.
        functional: each line of `input` is one JSON-encoded argument; `output` is the JSON-encoded result
        of Solution().<fn_name>(*args).

Rows whose ground truth is null or empty: `on_empty="error"` (default) raises, "skip" drops the row, "keep"
keeps it with ground_truth "" and metadata["ground_truth_missing"] = True. The shipped math_train file has
four such rows (upstream data), so its default is "keep" (7474 rows as the README says).

Bad input raises BenchmarkDataError (a ValueError) naming the file, the line (JSONL) or row (JSON array /
Parquet, 1-based) and the field, e.g. ".../math500.jsonl line 17: missing field 'answer'".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from repirl_jax.data.answers import last_boxed  # the one \boxed{} extractor (re-exported)
from repirl_jax.data.benchmark_rows import (
    BenchmarkDataError,
    Where,
    after_hashes,
    answer_text,
    assert_ground_truth,
    boxed_answer,
    get_field,
    get_str,
    id_text,
    io_ground_truth,
    iter_rows,
)

__all__ = [
    "BenchmarkDataError",
    "MATH_INSTRUCTION",
    "build_messages",
    "build_prompt",
    "benchmark_path",
    "known_benchmarks",
    "last_boxed",
    "load",
    "prompt_text",
    "short_name",
]

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_STARTER_INSTRUCTION = (
    "Solve the problem in Python by completing the starter code below. Keep the class name and the "
    "method signature unchanged.\n```python\n{starter}\n```\n"
    "Give your complete solution in a single ```python code block.")
CODE_METHOD_INSTRUCTION = (
    "Solve the problem in Python: define a class `{class_name}` with a method `{method}` (after `self`, it "
    "takes the inputs as keyword arguments). Give your complete solution in a single ```python code block.")
CODE_STDIN_INSTRUCTION = (
    "Solve the problem with a Python program that reads the input from standard input and writes the "
    "answer to standard output. Give your complete program in a single ```python code block.")

DOMAINS = ("math", "code")
ON_EMPTY = ("error", "skip", "keep")
_AUTO = object()  # default of `id_field` for generic files: use "id" when a row has it, else the row index


# --------------------------------------------------------------------------------------------- locations

# The benchmark files ship inside the package (package data; sources and licences: NOTICE.md beside them).
FILES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_files")


def benchmark_path(name: str) -> str:
    """Path of a shipped benchmark file from its short name."""
    return os.path.join(FILES_DIR, _spec_for_name(name).relpath)


def known_benchmarks() -> tuple[str, ...]:
    """The short names `load` accepts, in the README's order."""
    return tuple(_SPECS)


def short_name(text: str) -> str | None:
    """The benchmark `text` names (a short name or an alias such as gsm8k_test, any case), else None."""
    return _ALIASES.get(str(text).strip().lower())


# --------------------------------------------------------------------------------------------- shipped specs

# A converter maps (row, where) to (problem, ground_truth, metadata); ground truth "" means empty.
_Convert = Callable[[dict, Where], tuple[str, Any, dict]]


@dataclass(frozen=True)
class _Spec:
    name: str
    relpath: str
    domain: str
    convert: _Convert
    id_field: str | None
    on_empty: str = "error"
    aliases: tuple[str, ...] = field(default=())


def _rest(row: dict, *used: str) -> dict:
    return {k: v for k, v in row.items() if k not in used}


def _conv_answer(problem_key: str, answer_key: str, *drop: str) -> _Convert:
    def convert(row: dict, where: Where):
        problem = get_str(row, problem_key, where)
        raw = get_field(row, answer_key, where)
        meta = _rest(row, problem_key, answer_key, *drop)
        if not isinstance(raw, str) and raw is not None:
            meta["raw_answer"] = raw
        return problem, answer_text(raw, answer_key, where), meta
    return convert


def _conv_minerva(row: dict, where: Where):
    problem = get_str(row, "problem", where)
    solution = get_str(row, "solution", where)
    return problem, boxed_answer(solution, "solution", where), _rest(row, "problem", "idx")


def _conv_olympiad(row: dict, where: Where):
    question = get_str(row, "question", where)
    context = row.get("context")
    if context is not None and not isinstance(context, str):
        raise where.error(f"field 'context' should be a string or null, got {type(context).__name__}")
    problem = f"{context.strip()}\n\n{question}" if context and context.strip() else question
    final = get_field(row, "final_answer", where)
    if not isinstance(final, list):
        raise where.error(f"field 'final_answer' should be a list, got {type(final).__name__}")
    return problem, answer_text(final, "final_answer", where), _rest(row, "question", "id")


def _conv_gsm8k(row: dict, where: Where):
    problem = get_str(row, "question", where)
    solution = get_str(row, "answer", where)
    meta = _rest(row, "question", "answer", "idx")
    meta["solution"] = solution
    return problem, after_hashes(solution, "answer", where), meta


_LEETCODE_PROMPT = re.compile(r'\s*"""\n(?P<problem>.*?)\n"""\n(?P<starter>.*)', re.S)


def _conv_leetcode(row: dict, where: Where):
    prompt = get_str(row, "prompt", where)
    m = _LEETCODE_PROMPT.fullmatch(prompt)
    if m is None:
        raise where.error("field 'prompt' should be a \"\"\"docstring\"\"\" followed by the starter code")
    starter = m.group("starter").rstrip()
    test = get_str(row, "test", where)
    gt = assert_ground_truth(test, starter, "test", where)
    meta = _rest(row, "prompt", "prompt_sft", "test", "task_id")
    if isinstance(row.get("meta"), dict) and "difficulty" in row["meta"]:
        meta["difficulty"] = row["meta"]["difficulty"]
    return m.group("problem"), gt, meta


def _conv_livecodebench(row: dict, where: Where):
    problem = get_str(row, "problem", where)
    starter = get_field(row, "starter_code", where)
    if starter is None:
        starter = ""
    if not isinstance(starter, str):
        raise where.error(f"field 'starter_code' should be a string, got {type(starter).__name__}")
    gt = io_ground_truth(get_field(row, "tests", where), starter.rstrip(), "tests", where)
    meta = _rest(row, "problem", "starter_code", "tests")
    meta["testtype"] = gt["testtype"]
    meta["num_tests"] = len(gt["tests"])
    return problem, gt, meta


_SPECS: dict[str, _Spec] = {s.name: s for s in [
    _Spec("math500", "math/math500.jsonl", "math", _conv_answer("problem", "answer", "unique_id"), "unique_id"),
    _Spec("aime24", "math/aime24.jsonl", "math", _conv_answer("problem", "answer", "question", "id"), "id",
          aliases=("aime",)),
    _Spec("amc23", "math/amc23_qwen25math_40.jsonl", "math", _conv_answer("problem", "answer", "question", "id"),
          "id", aliases=("amc",)),
    _Spec("minerva", "math/minerva_math.jsonl", "math", _conv_minerva, "idx", aliases=("minerva_math",)),
    _Spec("olympiadbench", "math/olympiadbench.jsonl", "math", _conv_olympiad, "id"),
    _Spec("gsm8k", "math/gsm8k_test.jsonl", "math", _conv_gsm8k, "idx", aliases=("gsm8k_test",)),
    _Spec("math_train", "math/math_train.jsonl", "math", _conv_answer("problem", "answer"), None, on_empty="keep"),
    _Spec("leetcode", "code/leetcode_prime.jsonl", "code", _conv_leetcode, "task_id", aliases=("leetcode_prime",)),
    _Spec("livecodebench", "code/livecodebench_rllm_2408_2501_public_tests.jsonl", "code", _conv_livecodebench,
          None, aliases=("lcb",)),
]}
_ALIASES = {a: s.name for s in _SPECS.values() for a in (s.name, *s.aliases)}


def _unknown_name(name: str) -> BenchmarkDataError:
    return BenchmarkDataError(
        f"unknown benchmark {name!r}; known names: {', '.join(_SPECS)} "
        f"(or pass the path of a .jsonl, .json or .parquet file)")


def _spec_for_name(name: str) -> _Spec:
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise _unknown_name(str(name))
    return _SPECS[_ALIASES[key]]


# --------------------------------------------------------------------------------------------- load

def _is_empty(gt: Any) -> bool:
    if gt is None:
        return True
    if isinstance(gt, str):
        return not gt.strip()
    return False


def _collect(path: str, benchmark: str, domain: str, convert: _Convert, id_field: Any, on_empty: str,
             limit: int | None) -> list[dict]:
    records: list[dict] = []
    seen: dict[str, Where] = {}
    if limit == 0:
        return records
    index = -1
    for row, where in iter_rows(path):
        index += 1
        problem, gt, meta = convert(row, where)
        meta["source"] = where.source
        if _is_empty(gt):
            if on_empty == "error":
                raise where.error("the ground-truth answer is empty or null "
                                  "(pass on_empty='skip' or on_empty='keep' to load such rows)")
            if on_empty == "skip":
                continue
            gt = ""
            meta["ground_truth_missing"] = True
        if id_field is _AUTO:
            key = "id" if row.get("id") is not None else None
        else:
            key = id_field
        rid = id_text(get_field(row, key, where), key, where) if key else f"{benchmark}-{index}"
        if rid in seen:
            raise where.error(f"duplicate id {rid!r} (first seen at {seen[rid].unit} {seen[rid].number})")
        seen[rid] = where
        records.append({"id": rid, "benchmark": benchmark, "domain": domain, "problem": problem,
                        "ground_truth": gt, "metadata": meta})
        if limit is not None and len(records) >= limit:
            break
    return records


def _generic_converter(domain: str, prompt_field: str | None, answer_field: str | None, answer_format: str,
                       starter_field: str | None, used_id: str | None) -> _Convert:
    prompt_candidates = (prompt_field,) if prompt_field else ("problem", "question", "prompt")
    if answer_field:
        answer_candidates: tuple[str, ...] = (answer_field,)
    elif domain == "math":
        answer_candidates = ("answer", "ground_truth", "final_answer")
    else:
        answer_candidates = ("tests", "test", "ground_truth")

    def pick(row: dict, candidates: tuple[str, ...], what: str, option: str, where: Where) -> str:
        for key in candidates:
            if key in row:
                return key
        if len(candidates) == 1:
            get_field(row, candidates[0], where)  # raises "missing field"
        raise where.error(f"missing field '{candidates[0]}' (no {what} field among {', '.join(candidates)}; "
                          f"fields present: {', '.join(repr(k) for k in row)}; set {option}=)")

    def convert(row: dict, where: Where):
        pkey = pick(row, prompt_candidates, "prompt", "prompt_field", where)
        akey = pick(row, answer_candidates, "answer", "answer_field", where)
        problem = get_str(row, pkey, where)
        raw = row[akey]
        used = {pkey, akey}
        if used_id:
            used.add(used_id)
        if domain == "math":
            if answer_format == "raw":
                gt = answer_text(raw, akey, where)
            else:
                if raw is None:
                    gt = ""
                elif not isinstance(raw, str):
                    raise where.error(f"field '{akey}' should be a string for answer_format={answer_format!r}")
                else:
                    gt = boxed_answer(raw, akey, where) if answer_format == "boxed" else after_hashes(raw, akey, where)
                used.discard(akey)  # keep the worked solution in metadata
        else:
            skey = starter_field or ("starter_code" if "starter_code" in row else None)
            starter = ""
            if skey:
                starter = get_field(row, skey, where) or ""
                if not isinstance(starter, str):
                    raise where.error(f"field '{skey}' should be a string, got {type(starter).__name__}")
                used.add(skey)
            starter = starter.rstrip()
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                gt = ""
            elif isinstance(raw, str) and "assert" in raw and not raw.lstrip().startswith("["):
                gt = assert_ground_truth(raw, starter, akey, where)
            else:
                gt = io_ground_truth(raw, starter, akey, where)
        meta = _rest(row, *used)
        if domain == "math" and not isinstance(raw, str) and raw is not None:
            meta.setdefault("raw_answer", raw)
        return problem, gt, meta

    return convert


def load(name_or_path: str | os.PathLike, limit: int | None = None, *,
         prompt_field: str | None = None, answer_field: str | None = None, id_field: Any = _AUTO,
         domain: str | None = None, benchmark: str | None = None, answer_format: str = "raw",
         starter_field: str | None = None, on_empty: str | None = None) -> list[dict]:
    """Records of a shipped benchmark (short name) or of a generic JSONL / JSON-array / Parquet file.

    name_or_path: one of `known_benchmarks()` (math500, aime24, amc23, minerva, olympiadbench, gsm8k,
        math_train, leetcode, livecodebench), or a file path. A path to one of the shipped files themselves
        uses that benchmark's layout when no field options are given.
    limit: keep the first `limit` records (None: all). Rows dropped by on_empty="skip" do not count.
    Generic files only:
      prompt_field: field holding the problem (default: the first of problem / question / prompt present).
      answer_field: field holding the ground truth (default for math: answer / ground_truth / final_answer;
        for code: tests / test / ground_truth). A list of math answers joins with ", ".
      id_field: field holding the row id; None numbers rows "<benchmark>-<row index>" (0-based);
        default: "id" when a row has it, else the row index.
      domain: "math" (default) or "code". Code ground truth: an assert string calling my_solution.<method>
        -> {"format": "assert", ...}; a list (or JSON string) of {input, output[, testtype]} ->
        {"format": "io", ...}; see the module docstring.
      benchmark: name stored in every record (default: the file name without extension).
      answer_format: "raw" (default), "boxed" (last \\boxed{} of the field) or "gsm8k" (text after ####).
      starter_field: code starter-code field (default "starter_code" when present).
    on_empty: "error" | "skip" | "keep" for rows with a null or empty ground truth (default "error", except
      math_train: "keep").
    """
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit should be None or an integer >= 0, got {limit!r}")
    if on_empty is not None and on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty should be one of {ON_EMPTY}, got {on_empty!r}")
    generic_options = {"prompt_field": prompt_field, "answer_field": answer_field, "domain": domain,
                       "benchmark": benchmark, "starter_field": starter_field}
    given = [k for k, v in generic_options.items() if v is not None]
    if id_field is not _AUTO:
        given.append("id_field")
    if answer_format != "raw":
        given.append("answer_format")

    text = os.fspath(name_or_path)
    spec = None
    is_short_name = "/" not in text and os.sep not in text and text.strip().lower() in _ALIASES
    if not is_short_name and os.path.exists(text):
        path = text
        if not given:
            real = os.path.realpath(path)
            spec = next((s for s in _SPECS.values()
                         if os.path.realpath(os.path.join(FILES_DIR, s.relpath)) == real), None)
    else:
        looks_like_path = os.sep in text or "/" in text or re.search(r"\.(jsonl|ndjson|json|parquet|pq)$", text, re.I)
        if looks_like_path:
            raise FileNotFoundError(f"benchmark file not found: {text}")
        spec = _spec_for_name(text)
        if given:
            raise TypeError(f"{', '.join(given)} apply to generic files only, not to the shipped benchmark {spec.name!r}")
        path = os.path.join(FILES_DIR, spec.relpath)
        if not os.path.exists(path):
            raise FileNotFoundError(f"benchmark {spec.name!r}: file not found: {path} (the package's data files "
                                    f"are missing: reinstall repirl_jax)")

    if spec is not None:
        return _collect(path, spec.name, spec.domain, spec.convert, spec.id_field, on_empty or spec.on_empty, limit)

    domain = domain or "math"
    if domain not in DOMAINS:
        raise ValueError(f"domain should be one of {DOMAINS}, got {domain!r}")
    if answer_format not in ("raw", "boxed", "gsm8k"):
        raise ValueError(f"answer_format should be 'raw', 'boxed' or 'gsm8k', got {answer_format!r}")
    if answer_format != "raw" and domain != "math":
        raise ValueError("answer_format applies to math files only")
    name = benchmark or re.sub(r"\.(jsonl|ndjson|json|parquet|pq)$", "", os.path.basename(path), flags=re.I)
    used_id = id_field if isinstance(id_field, str) else ("id" if id_field is _AUTO else None)
    convert = _generic_converter(domain, prompt_field, answer_field, answer_format, starter_field, used_id)
    return _collect(path, name, domain, convert, id_field, on_empty or "error", limit)


# --------------------------------------------------------------------------------------------- prompts

def prompt_text(record: dict) -> str:
    """The user message for a record: the problem followed by the domain's answer instruction."""
    try:
        problem = record["problem"].strip()
        domain = record["domain"]
    except (KeyError, AttributeError, TypeError):
        raise ValueError("record should be a dict from benchmarks.load with 'problem' and 'domain'") from None
    if domain == "math":
        return f"{problem}\n{MATH_INSTRUCTION}"
    if domain == "code":
        gt = record.get("ground_truth")
        starter = gt.get("starter_code", "") if isinstance(gt, dict) else ""
        stdin = isinstance(gt, dict) and gt.get("format") == "io" and gt.get("testtype") == "stdin"
        if starter.strip() and not stdin:
            return f"{problem}\n\n" + CODE_STARTER_INSTRUCTION.format(starter=starter.rstrip())
        if isinstance(gt, dict) and gt.get("format") == "assert":
            return f"{problem}\n\n" + CODE_METHOD_INSTRUCTION.format(
                class_name=gt.get("class_name") or "Solution", method=gt.get("entry_point"))
        return f"{problem}\n\n{CODE_STDIN_INSTRUCTION}"
    raise ValueError(f"record {record.get('id')!r}: domain should be one of {DOMAINS}, got {domain!r}")


def build_messages(record: dict) -> list[dict]:
    """Chat messages for a record: one user turn holding `prompt_text(record)`."""
    return [{"role": "user", "content": prompt_text(record)}]


def build_prompt(record: dict, tokenizer: Any = None) -> str:
    """The generation prompt for a record.

    With a tokenizer: its chat template over one user turn, add_generation_prompt=True (so the text ends
    with the assistant header, e.g. "<|im_start|>assistant\\n" for Qwen). With tokenizer=None: the plain
    user message (problem + instruction), for tiny test tokenizers without a chat template.
    """
    if tokenizer is None:
        return prompt_text(record)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no chat template; "
                         f"pass tokenizer=None for a plain-text prompt")
    text = tokenizer.apply_chat_template(build_messages(record), tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, expected str")
    return text
