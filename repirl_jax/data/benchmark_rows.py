"""Reading benchmark files: rows with their position (file, line or row) and field readers whose errors name it.

    for row, where in iter_rows(path):          # .jsonl / .ndjson, .json (an array), .parquet
        text = get_str(row, "problem", where)   # BenchmarkDataError: "<path> line 17: missing field 'problem' ..."

Also the code ground truth built from a row (`assert_ground_truth`: LeetCode asserts; `io_ground_truth`:
stdin / functional tests) and the prelude of imports LeetCode-style stubs assume. `benchmarks.load` turns
rows into records with these.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator

from repirl_jax.data.answers import last_boxed


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


class BenchmarkDataError(ValueError):
    """A benchmark file, row or field is not what the loader expects (message names file, line, field)."""


# --------------------------------------------------------------------------------------------- fields

@dataclass(frozen=True)
class Where:
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


def get_field(row: dict, key: str, where: Where) -> Any:
    """row[key]; a missing field is an error naming the fields present."""
    if key not in row:
        present = ", ".join(repr(k) for k in row) or "none"
        raise where.error(f"missing field '{key}' (fields present: {present})")
    return row[key]


def get_str(row: dict, key: str, where: Where, *, allow_empty: bool = False) -> str:
    """row[key] as a string (non-empty unless `allow_empty`)."""
    value = get_field(row, key, where)
    if not isinstance(value, str):
        raise where.error(f"field '{key}' should be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise where.error(f"field '{key}' is empty")
    return value


def format_number(value: float | int, key: str, where: Where) -> str:
    """A JSON number as plain decimal text: 27.0 -> "27", 0.5 -> "0.5"; NaN and infinities are errors."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise where.error(f"field '{key}' is not a finite number: {value!r}")
    if value == int(value):
        return str(int(value))
    return repr(value)


def answer_text(value: Any, key: str, where: Where) -> str:
    """A math answer as a string ("" for null). Lists join with ", "."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)):
        return format_number(value, key, where)
    if isinstance(value, (list, tuple)):
        parts = [answer_text(v, key, where) for v in value]
        return ", ".join(p for p in parts if p)
    raise where.error(f"field '{key}' should be a string, a number or a list, got {type(value).__name__}")


def id_text(value: Any, key: str, where: Where) -> str:
    """A row id (a string or a number) as non-empty text."""
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise where.error(f"field '{key}' should be a string or an integer id, got {value!r}")
    text = format_number(value, key, where) if not isinstance(value, str) else value.strip()
    if not text:
        raise where.error(f"field '{key}' is an empty id")
    return text


def after_hashes(text: str, key: str, where: Where) -> str:
    """The final answer after the last "####" (GSM8K solutions)."""
    if "####" not in text:
        raise where.error(f"field '{key}' has no '####' marker before the final answer")
    answer = text.rsplit("####", 1)[1].strip()
    if not answer:
        raise where.error(f"field '{key}' has nothing after '####'")
    return answer


def boxed_answer(text: str, key: str, where: Where) -> str:
    """The last \\boxed{...} of a solution (Minerva)."""
    answer = last_boxed(text)
    if answer is None:
        raise where.error(f"field '{key}' has no \\boxed{{...}} answer")
    return answer.strip()


# --------------------------------------------------------------------------------------------- code helpers

_DEF_RE = re.compile(r"^\s+def\s+([A-Za-z_]\w*)\s*\(", re.M)
_CLASS_RE = re.compile(r"^class\s+([A-Za-z_]\w*)", re.M)


def starter_parts(starter: str) -> tuple[str | None, str | None, str]:
    """(class name, first method name, helper definitions before the main class) of a LeetCode stub."""
    classes = list(_CLASS_RE.finditer(starter))
    if not classes:
        return None, None, ""
    main = next((m for m in classes if m.group(1) == "Solution"), classes[-1])
    method = _DEF_RE.search(starter, main.end())
    helpers = starter[:main.start()].strip()
    return main.group(1), (method.group(1) if method else None), helpers


def prelude(helpers: str) -> str:
    """CODE_PRELUDE, then the helper definitions a starter puts before its main class."""
    return CODE_PRELUDE + (helpers + "\n" if helpers else "")


def assert_ground_truth(test: str, starter: str, key: str, where: Where) -> dict:
    """The "assert" ground truth of a LeetCode row (module docstring of `benchmarks`)."""
    called = sorted(set(re.findall(r"my_solution\.([A-Za-z_]\w*)\s*\(", test)))
    cls, method, helpers = starter_parts(starter)
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
            "starter_code": starter, "prelude": prelude(helpers)}


def io_ground_truth(tests: Any, starter: str, key: str, where: Where) -> dict:
    """The "io" ground truth of a LiveCodeBench row: stdin or functional tests, checked."""
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
    cls, method, helpers = starter_parts(starter)
    if kind == "functional" and method is None:
        raise where.error("functional tests need starter code defining the method to call (field 'starter_code')")
    return {"format": "io", "testtype": kind, "tests": out,
            "fn_name": method if kind == "functional" else None,
            "class_name": cls if kind == "functional" else None,
            "starter_code": starter, "prelude": prelude(helpers)}


# --------------------------------------------------------------------------------------------- row readers

def _iter_jsonl(path: str) -> Iterator[tuple[dict, Where]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = Where(path, "line", lineno)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise where.error(f"invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise where.error(f"expected a JSON object, got {type(row).__name__}")
            yield row, where


def _iter_json_array(path: str) -> Iterator[tuple[dict, Where]]:
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
        where = Where(path, "row", k)
        if not isinstance(row, dict):
            raise where.error(f"expected a JSON object, got {type(row).__name__}")
        yield row, where


def _iter_parquet(path: str) -> Iterator[tuple[dict, Where]]:
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
            yield row, Where(path, "row", number)


def iter_rows(path: str) -> Iterator[tuple[dict, Where]]:
    """(row, where) of every row of a .jsonl / .ndjson, .json (array) or .parquet file."""
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return _iter_jsonl(path)
    if lower.endswith(".json"):
        return _iter_json_array(path)
    if lower.endswith((".parquet", ".pq")):
        return _iter_parquet(path)
    raise BenchmarkDataError(f"{path}: unsupported file type; expected .jsonl, .json or .parquet")
