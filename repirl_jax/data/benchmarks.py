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

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from repirl_jax.data.answers import last_boxed  # the one \boxed{} extractor (re-exported)

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

# Imports LeetCode-style stubs and tests take for granted (type names in signatures, common containers).
# `math` is imported as a module only: `from math import *` would shadow the builtin three-argument pow.
CODE_PRELUDE = (
    "from typing import *\n"
    "from collections import *\n"
    "from heapq import *\n"
    "from bisect import *\n"
    "from itertools import *\n"
    "from functools import *\n"
    "import collections, heapq, bisect, itertools, functools, math, string, re, sys, random, operator\n"
    "from math import inf, gcd, comb, isqrt, sqrt, log2, log, ceil, floor\n")

DOMAINS = ("math", "code")
ON_EMPTY = ("error", "skip", "keep")
_AUTO = object()  # default of `id_field` for generic files: use "id" when a row has it, else the row index


class BenchmarkDataError(ValueError):
    """A benchmark file, row or field is not what the loader expects (message names file, line, field)."""


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


# --------------------------------------------------------------------------------------------- helpers

@dataclass(frozen=True)
class _Where:
    """A position in a file, for error messages: '<path> line 17' / '<path> row 3'."""
    path: str
    unit: str  # "line" or "row"
    number: int  # 1-based

    def __str__(self) -> str:
        return f"{self.path} {self.unit} {self.number}"

    def error(self, message: str) -> BenchmarkDataError:
        return BenchmarkDataError(f"{self}: {message}")

    @property
    def source(self) -> str:
        return f"{os.path.basename(self.path)}:{self.number}"


def _get(row: dict, key: str, where: _Where) -> Any:
    if key not in row:
        present = ", ".join(repr(k) for k in row) or "none"
        raise where.error(f"missing field '{key}' (fields present: {present})")
    return row[key]


def _get_str(row: dict, key: str, where: _Where, *, allow_empty: bool = False) -> str:
    value = _get(row, key, where)
    if not isinstance(value, str):
        raise where.error(f"field '{key}' should be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise where.error(f"field '{key}' is empty")
    return value


def _format_number(value: float | int, key: str, where: _Where) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise where.error(f"field '{key}' is not a finite number: {value!r}")
    if value == int(value):
        return str(int(value))
    return repr(value)


def _answer_text(value: Any, key: str, where: _Where) -> str:
    """A math answer as a string ("" for null). Lists join with ", "."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)):
        return _format_number(value, key, where)
    if isinstance(value, (list, tuple)):
        parts = [_answer_text(v, key, where) for v in value]
        return ", ".join(p for p in parts if p)
    raise where.error(f"field '{key}' should be a string, a number or a list, got {type(value).__name__}")


def _id_text(value: Any, key: str, where: _Where) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise where.error(f"field '{key}' should be a string or an integer id, got {value!r}")
    text = _format_number(value, key, where) if not isinstance(value, str) else value.strip()
    if not text:
        raise where.error(f"field '{key}' is an empty id")
    return text


def _after_hashes(text: str, key: str, where: _Where) -> str:
    if "####" not in text:
        raise where.error(f"field '{key}' has no '####' marker before the final answer")
    answer = text.rsplit("####", 1)[1].strip()
    if not answer:
        raise where.error(f"field '{key}' has nothing after '####'")
    return answer


def _boxed_answer(text: str, key: str, where: _Where) -> str:
    answer = last_boxed(text)
    if answer is None:
        raise where.error(f"field '{key}' has no \\boxed{{...}} answer")
    return answer.strip()


# --------------------------------------------------------------------------------------------- code helpers

_DEF_RE = re.compile(r"^\s+def\s+([A-Za-z_]\w*)\s*\(", re.M)
_CLASS_RE = re.compile(r"^class\s+([A-Za-z_]\w*)", re.M)


def _starter_parts(starter: str) -> tuple[str | None, str | None, str]:
    """(class name, first method name, helper definitions before the main class) of a LeetCode stub."""
    classes = list(_CLASS_RE.finditer(starter))
    if not classes:
        return None, None, ""
    main = next((m for m in classes if m.group(1) == "Solution"), classes[-1])
    method = _DEF_RE.search(starter, main.end())
    helpers = starter[:main.start()].strip()
    return main.group(1), (method.group(1) if method else None), helpers


def _prelude(helpers: str) -> str:
    return CODE_PRELUDE + (helpers + "\n" if helpers else "")


def _assert_ground_truth(test: str, starter: str, key: str, where: _Where) -> dict:
    called = sorted(set(re.findall(r"my_solution\.([A-Za-z_]\w*)\s*\(", test)))
    cls, method, helpers = _starter_parts(starter)
    bound = re.search(r"my_solution\s*=\s*([A-Za-z_]\w*)\s*\(", test)
    if bound is None:
        raise where.error(f"field '{key}' does not bind my_solution (expected 'my_solution = Solution()')")
    if len(called) > 1 and method in called:
        entry = method
    elif len(called) == 1:
        entry = called[0]
    elif method:
        entry = method
    else:
        raise where.error(f"field '{key}' calls no my_solution.<method>(...) and the starter code has no method")
    return {"format": "assert", "test": test, "class_name": bound.group(1), "entry_point": entry,
            "starter_code": starter, "prelude": _prelude(helpers)}


def _io_ground_truth(tests: Any, starter: str, key: str, where: _Where) -> dict:
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as e:
            raise where.error(f"field '{key}' is a string but not a JSON list of tests ({e.msg})") from None
    if not isinstance(tests, list) or not tests:
        raise where.error(f"field '{key}' should be a non-empty list of {{input, output, testtype}} dicts")
    out = []
    for k, t in enumerate(tests):
        if not isinstance(t, dict):
            raise where.error(f"field '{key}'[{k}] should be a dict, got {type(t).__name__}")
        for sub in ("input", "output"):
            if sub not in t:
                raise where.error(f"field '{key}'[{k}] is missing '{sub}'")
            if not isinstance(t[sub], str):
                raise where.error(f"field '{key}'[{k}]['{sub}'] should be a string, got {type(t[sub]).__name__}")
        testtype = t.get("testtype") or ("functional" if starter.strip() else "stdin")
        if testtype not in ("stdin", "functional"):
            raise where.error(f"field '{key}'[{k}]['testtype'] should be 'stdin' or 'functional', got {testtype!r}")
        out.append({**t, "testtype": testtype})
    kinds = {t["testtype"] for t in out}
    if len(kinds) != 1:
        raise where.error(f"field '{key}' mixes test types {sorted(kinds)}")
    kind = kinds.pop()
    cls, method, helpers = _starter_parts(starter)
    if kind == "functional" and method is None:
        raise where.error("functional tests need starter code defining the method to call (field 'starter_code')")
    return {"format": "io", "testtype": kind, "tests": out,
            "fn_name": method if kind == "functional" else None,
            "class_name": cls if kind == "functional" else None,
            "starter_code": starter, "prelude": _prelude(helpers)}


# --------------------------------------------------------------------------------------------- shipped specs

# A converter maps (row, where) to (problem, ground_truth, metadata); ground truth "" means empty.
_Convert = Callable[[dict, _Where], tuple[str, Any, dict]]


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
    def convert(row: dict, where: _Where):
        problem = _get_str(row, problem_key, where)
        raw = _get(row, answer_key, where)
        meta = _rest(row, problem_key, answer_key, *drop)
        if not isinstance(raw, str) and raw is not None:
            meta["raw_answer"] = raw
        return problem, _answer_text(raw, answer_key, where), meta
    return convert


def _conv_minerva(row: dict, where: _Where):
    problem = _get_str(row, "problem", where)
    solution = _get_str(row, "solution", where)
    return problem, _boxed_answer(solution, "solution", where), _rest(row, "problem", "idx")


def _conv_olympiad(row: dict, where: _Where):
    question = _get_str(row, "question", where)
    context = row.get("context")
    if context is not None and not isinstance(context, str):
        raise where.error(f"field 'context' should be a string or null, got {type(context).__name__}")
    problem = f"{context.strip()}\n\n{question}" if context and context.strip() else question
    final = _get(row, "final_answer", where)
    if not isinstance(final, list):
        raise where.error(f"field 'final_answer' should be a list, got {type(final).__name__}")
    return problem, _answer_text(final, "final_answer", where), _rest(row, "question", "id")


def _conv_gsm8k(row: dict, where: _Where):
    problem = _get_str(row, "question", where)
    solution = _get_str(row, "answer", where)
    meta = _rest(row, "question", "answer", "idx")
    meta["solution"] = solution
    return problem, _after_hashes(solution, "answer", where), meta


_LEETCODE_PROMPT = re.compile(r'\s*"""\n(?P<problem>.*?)\n"""\n(?P<starter>.*)', re.S)


def _conv_leetcode(row: dict, where: _Where):
    prompt = _get_str(row, "prompt", where)
    m = _LEETCODE_PROMPT.fullmatch(prompt)
    if m is None:
        raise where.error("field 'prompt' should be a \"\"\"docstring\"\"\" followed by the starter code")
    starter = m.group("starter").rstrip()
    test = _get_str(row, "test", where)
    gt = _assert_ground_truth(test, starter, "test", where)
    meta = _rest(row, "prompt", "prompt_sft", "test", "task_id")
    if isinstance(row.get("meta"), dict) and "difficulty" in row["meta"]:
        meta["difficulty"] = row["meta"]["difficulty"]
    return m.group("problem"), gt, meta


def _conv_livecodebench(row: dict, where: _Where):
    problem = _get_str(row, "problem", where)
    starter = _get(row, "starter_code", where)
    if starter is None:
        starter = ""
    if not isinstance(starter, str):
        raise where.error(f"field 'starter_code' should be a string, got {type(starter).__name__}")
    gt = _io_ground_truth(_get(row, "tests", where), starter.rstrip(), "tests", where)
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


# --------------------------------------------------------------------------------------------- row readers

def _iter_jsonl(path: str) -> Iterator[tuple[dict, _Where]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = _Where(path, "line", lineno)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise where.error(f"invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise where.error(f"expected a JSON object, got {type(row).__name__}")
            yield row, where


def _iter_json_array(path: str) -> Iterator[tuple[dict, _Where]]:
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise BenchmarkDataError(f"{path} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):  # {"data": [...]} / {"rows": [...]}: take the single list value
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise BenchmarkDataError(f"{path}: expected a JSON array of objects (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise BenchmarkDataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    for k, row in enumerate(data, start=1):
        where = _Where(path, "row", k)
        if not isinstance(row, dict):
            raise where.error(f"expected a JSON object, got {type(row).__name__}")
        yield row, where


def _iter_parquet(path: str) -> Iterator[tuple[dict, _Where]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading {path} needs pyarrow, which is not installed (pip install pyarrow==26.0.1); "
            f"or convert the file to JSONL") from None
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield row, _Where(path, "row", number)


def _iter_rows(path: str) -> Iterator[tuple[dict, _Where]]:
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return _iter_jsonl(path)
    if lower.endswith(".json"):
        return _iter_json_array(path)
    if lower.endswith((".parquet", ".pq")):
        return _iter_parquet(path)
    raise BenchmarkDataError(f"{path}: unsupported file type; expected .jsonl, .json or .parquet")


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
    seen: dict[str, _Where] = {}
    if limit == 0:
        return records
    index = -1
    for row, where in _iter_rows(path):
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
        rid = _id_text(_get(row, key, where), key, where) if key else f"{benchmark}-{index}"
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

    def pick(row: dict, candidates: tuple[str, ...], what: str, option: str, where: _Where) -> str:
        for key in candidates:
            if key in row:
                return key
        if len(candidates) == 1:
            _get(row, candidates[0], where)  # raises "missing field"
        raise where.error(f"missing field '{candidates[0]}' (no {what} field among {', '.join(candidates)}; "
                          f"fields present: {', '.join(repr(k) for k in row)}; set {option}=)")

    def convert(row: dict, where: _Where):
        pkey = pick(row, prompt_candidates, "prompt", "prompt_field", where)
        akey = pick(row, answer_candidates, "answer", "answer_field", where)
        problem = _get_str(row, pkey, where)
        raw = row[akey]
        used = {pkey, akey}
        if used_id:
            used.add(used_id)
        if domain == "math":
            if answer_format == "raw":
                gt = _answer_text(raw, akey, where)
            else:
                if raw is None:
                    gt = ""
                elif not isinstance(raw, str):
                    raise where.error(f"field '{akey}' should be a string for answer_format={answer_format!r}")
                else:
                    gt = _boxed_answer(raw, akey, where) if answer_format == "boxed" else _after_hashes(raw, akey, where)
                used.discard(akey)  # keep the worked solution in metadata
        else:
            skey = starter_field or ("starter_code" if "starter_code" in row else None)
            starter = ""
            if skey:
                starter = _get(row, skey, where) or ""
                if not isinstance(starter, str):
                    raise where.error(f"field '{skey}' should be a string, got {type(starter).__name__}")
                used.add(skey)
            starter = starter.rstrip()
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                gt = ""
            elif isinstance(raw, str) and "assert" in raw and not raw.lstrip().startswith("["):
                gt = _assert_ground_truth(raw, starter, akey, where)
            else:
                gt = _io_ground_truth(raw, starter, akey, where)
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
