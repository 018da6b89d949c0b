"""Outcome reward for code problems: the fraction of a problem's tests that the response's program passes.

The program is the last fenced ```python block of the response (``py`` / ``python3`` also accepted; an
unterminated block does not count). It is model-written, untrusted code and only ever runs inside the
sandbox of :mod:`repirl_jax.rewards.sandbox` (bubblewrap namespaces + a dedicated unprivileged uid +
rlimits; see there). Without that sandbox, scoring refuses to run (:class:`SandboxUnavailableError`) unless
``allow_unsandboxed=True`` is passed, which runs the code unisolated and warns loudly.

Test formats (as in the shipped ``repirl_jax/data/benchmark_files/code``)
-------------------------------------------------------------------------
* **LeetCode / PRIME** (``leetcode_prime.jsonl``, field ``test``): a string of Python statements,
  ``my_solution = Solution()`` then ``test_input = {...}`` / ``assert my_solution.f(**test_input) == <literal>``
  pairs (some problems add helpers like ``_f1`` / ``_f2`` to build and read linked lists). The solution
  class ``Solution`` is bound to ``my_solution`` by the test string itself. Each ``assert`` is one test.
  Before the program, a prelude imports what LeetCode's environment offers (``typing``, ``collections``,
  ``heapq``, ``bisect``, ``functools``, ``itertools``, ``math`` ...) and defines ``ListNode`` / ``TreeNode``
  (a program's own definitions override them).
* **LiveCodeBench** (``livecodebench_*.jsonl``, field ``tests``): a list of
  ``{"input", "output", "testtype"}``.

  - ``"stdin"``: the program runs as a script (``__name__ == "__main__"``), once per test, in a fresh
    interpreter with ``input`` on stdin; its stdout must match ``output`` (line by line, surrounding
    whitespace ignored; numbers with a decimal point or exponent may differ by 1e-6 abs./rel.).
  - ``"functional"``: ``input`` is one JSON value per line (the arguments), ``output`` a JSON value. The
    function name is not in the test rows: it comes from the row's ``starter_code``
    (``class Solution: def <name>(self, ...)``): pass ``starter_code=`` or ``fn_name=`` (or the whole row,
    see below); failing both, the single public method of the response's ``class Solution`` is used. The
    call is ``Solution().<name>(*args)`` (or a top-level function ``<name>`` if there is no such class).

``tests`` may also be the benchmark row itself (a dict with ``test``, or ``tests`` + ``starter_code``), a
JSON string of the LiveCodeBench list, or a list of plain ``assert`` strings (each one test).

Fail-closed checking
--------------------
Expected values never enter the sandbox. The program's harness only reports *what the program computed*
(the value of each assert's left-hand side, the return value of each call, each run's stdout) on a result
channel, and the host compares those with the expected values. A test without a reported value fails: a
program that exits (``sys.exit(0)``, ``os._exit(0)``), raises, is killed or times out before its checks
run scores 0 for them, and printing "passed" or writing fake results cannot pass a test without computing
its answer. Return values are compared like Python ``==`` (tuples equal lists; floats within 1e-6), on
plain data only (list/tuple/dict/set/str/int/float/bool/None; any other object fails).

Only ``assert`` statements that are not of the form ``X == <literal>`` (none in the shipped benchmarks)
are judged inside the sandbox; a program that forges the result channel could pass those.

API
---
* :func:`score` ``(response, tests, ...) -> float``: fraction of tests passed (``all_or_nothing=True``: 1.0
  only if all pass).
* :func:`evaluate`: the same, returning a :class:`CodeResult` (passed / total / status / details).
* :class:`CodeScorer` / :func:`score_batch`: a pool of ``workers`` parallel slots (each with its own uid)
  for the trainer's batches, returning per-item results and :class:`BatchStats` (timeouts, crashes,
  responses without a code block ...).
"""

from __future__ import annotations

import ast
import collections
import concurrent.futures
import dataclasses
import json
import math
import os
import queue
import re
import threading
import time
from typing import Any, Sequence

from repirl_jax.rewards.code_harness import HARNESS, PRELUDE, encode
from repirl_jax.rewards.sandbox import (  # noqa: F401  (re-exported)
    RunResult,
    Sandbox,
    SandboxConfig,
    SandboxUnavailableError,
    UidLease,
    sandbox_available,
    sandbox_status,
)

# Statuses of one response, worst first.
NO_CODE = "no_code_block"        # no ```python block in the response
SANDBOX_ERROR = "sandbox_error"  # the sandbox itself failed (not the program's fault)
TIMEOUT = "timeout"              # the wall-clock limit of the call or of a test was hit
OUTPUT_LIMIT = "output_limit"    # the program produced more output than allowed
CRASH = "crash"                  # syntax error, exception, non-zero exit, killed, exited before its checks
WRONG = "wrong"                  # ran to completion, some tests failed
PASSED = "passed"                # all tests passed
STATUSES = (NO_CODE, SANDBOX_ERROR, TIMEOUT, OUTPUT_LIMIT, CRASH, WRONG, PASSED)

FLOAT_TOL = 1e-6

# --------------------------------------------------------------------------------------------------------
# Extracting the program
# --------------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*```[ \t]*(python3?|py)[ \t]*\r?\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE | re.I)


def extract_code(response: str) -> str | None:
    """The body of the last complete ```python fenced block of ``response`` (None if there is none)."""
    blocks = _FENCE.findall(response or "")
    if not blocks:
        return None
    code = blocks[-1][1]
    return code if code.strip() else None


# --------------------------------------------------------------------------------------------------------
# Test specs
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Spec:
    """What the sandbox runs (``job``, no expected values) and what the host checks (``expected``)."""

    mode: str                      # "stdin" | "inproc"
    job: dict
    expected: list                 # per test: ("value", v) | ("stdout", text) | ("ok", None)
    n_tests: int


# CPython 3.11 keeps the AST constructor's recursion depth in per-interpreter state: two threads building ASTs
# at once (score_batch's workers, when one gives up the GIL mid-construction) can fail with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython gh-106905; seen here on 3.11.7, scoring a correct program
# as sandbox_error). Every ast call of this module holds this lock.
_AST_LOCK = threading.Lock()


def _is_literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except Exception:  # noqa: BLE001
        return False, None


def _assert_steps(src: str) -> tuple[list[dict], list]:
    """Split Python test statements into sandbox steps; each ``assert`` becomes one probe."""
    with _AST_LOCK:
        return _assert_steps_locked(src)


def _assert_steps_locked(src: str) -> tuple[list[dict], list]:
    tree = ast.parse(src)
    steps: list[dict] = []
    expected: list = []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            t = node.test
            if (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)):
                ok, val = _is_literal(t.comparators[0])
                if ok:
                    steps.append({"eval": ast.unparse(t.left), "i": len(expected)})
                    expected.append(("value", encode(val)))
                    continue
            steps.append({"assert": ast.unparse(node), "i": len(expected)})
            expected.append(("ok", None))
        else:
            steps.append({"exec": ast.unparse(node)})
    return steps, expected


def _fn_name_from(source: str | None) -> str | None:
    """Name of the single public method of ``class Solution`` (or single top-level function) in source."""
    if not source:
        return None
    try:
        with _AST_LOCK:
            tree = ast.parse(source + ("\n        pass\n" if source.rstrip().endswith(":") else ""))
    except SyntaxError:
        m = re.search(r"class\s+Solution\b.*?\bdef\s+([A-Za-z_]\w*)\s*\(\s*self", source, re.S)
        return m.group(1) if m else None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Solution":
            names = [f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and not f.name.startswith("_")]
            if len(names) == 1:
                return names[0]
            return None
    funcs = [f.name for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")]
    return funcs[0] if len(funcs) == 1 else None


def _build_spec(program: str, tests: Any, fn_name: str | None, starter_code: str | None,
                test_timeout_s: float, max_test_output: int) -> _Spec:
    if isinstance(tests, dict):  # a benchmark row
        row = tests
        starter_code = starter_code or row.get("starter_code") or None
        md = row.get("metadata")
        if isinstance(md, str):
            try:
                md = json.loads(md)
            except json.JSONDecodeError:
                md = None
        if not fn_name and isinstance(md, dict):
            fn_name = md.get("func_name") or None
        if "test" in row:
            tests = row["test"]
        elif "tests" in row:
            tests = row["tests"]
        else:
            raise ValueError("benchmark row has neither 'test' (LeetCode) nor 'tests' (LiveCodeBench)")
    if isinstance(tests, str) and tests.lstrip().startswith("["):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError:
            pass
    base = {"program": program, "test_timeout": test_timeout_s}
    if isinstance(tests, str):  # LeetCode / PRIME assert block
        steps, expected = _assert_steps(tests)
        return _Spec("inproc", {**base, "mode": "inproc", "steps": steps}, expected, len(expected))
    tests = list(tests)
    if not tests:
        return _Spec("inproc", {**base, "mode": "inproc", "steps": []}, [], 0)
    if all(isinstance(t, str) for t in tests):  # plain assert strings
        steps, expected = _assert_steps("\n".join(tests))
        return _Spec("inproc", {**base, "mode": "inproc", "steps": steps}, expected, len(expected))
    types = {t.get("testtype", "stdin") for t in tests}
    if types == {"stdin"}:
        job = {**base, "mode": "stdin", "inputs": [t["input"] for t in tests], "max_output": max_test_output}
        return _Spec("stdin", job, [("stdout", t["output"]) for t in tests], len(tests))
    if types == {"functional"}:
        name = fn_name or _fn_name_from(starter_code) or _fn_name_from(program)
        steps, expected = [], []
        for t in tests:
            steps.append({"call": name, "input": t["input"], "i": len(expected)})
            try:
                expected.append(("value", encode(json.loads(t["output"]))))
            except (json.JSONDecodeError, TypeError):
                expected.append(("value", encode(t["output"])))
        return _Spec("inproc", {**base, "mode": "inproc", "steps": steps}, expected, len(expected))
    raise ValueError(f"mixed or unknown test types: {sorted(types)}")


# --------------------------------------------------------------------------------------------------------
# Comparison (values arrive encoded by code_harness.encode, the same function inside the sandbox and here)
# --------------------------------------------------------------------------------------------------------


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, str)


def values_equal(a: Any, b: Any) -> bool:
    """Python ``==`` on encoded values (tuples equal lists), floats within :data:`FLOAT_TOL`."""
    if _num(a) and _num(b):
        if isinstance(a, float) or isinstance(b, float):
            if math.isnan(a) or math.isnan(b):
                return False
            return a == b or math.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)
        return a == b
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        if "__obj__" in a or "__obj__" in b or a.keys() != b.keys():
            return False
        if "__set__" in a:
            xs, ys = a["__set__"], b["__set__"]
            if len(xs) != len(ys):
                return False
            left = list(ys)
            for x in xs:
                for j, y in enumerate(left):
                    if values_equal(x, y):
                        del left[j]
                        break
                else:
                    return False
            return True
        if "__dict__" in a:
            da = {json.dumps(k, sort_keys=True): v for k, v in a["__dict__"]}
            db = {json.dumps(k, sort_keys=True): v for k, v in b["__dict__"]}
            return da.keys() == db.keys() and all(values_equal(da[k], db[k]) for k in da)
    return False


_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def stdout_matches(got: str, expected: str) -> bool:
    """Line-by-line comparison, surrounding whitespace and trailing blank lines ignored; tokens that are
    decimal numbers (with a point or exponent) may differ by :data:`FLOAT_TOL` (abs. or rel.)."""
    g = [ln.strip() for ln in got.strip().splitlines()]
    e = [ln.strip() for ln in expected.strip().splitlines()]
    if g == e:
        return True
    if len(g) != len(e):
        return False
    for lg, le in zip(g, e):
        tg, te = lg.split(), le.split()
        if tg == te:
            continue
        if len(tg) != len(te):
            return False
        for a, b in zip(tg, te):
            if a == b:
                continue
            if not (_NUM_RE.match(a) and _NUM_RE.match(b)) or not any(c in b for c in ".eE"):
                return False
            fa, fb = float(a), float(b)
            if not math.isclose(fa, fb, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL):
                return False
    return True


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CodeResult:
    """Outcome for one response. ``score`` is ``passed / total`` (or 0/1 in all-or-nothing mode);
    ``details`` holds one short string per test (``"ok"`` or why it failed, for debugging)."""

    score: float
    passed: int
    total: int
    status: str
    details: tuple[str, ...] = ()
    elapsed_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """Counts for one batch. Everything but ``n_passed`` and ``n_wrong`` scored without the program
    finishing: watch ``n_timeout`` / ``n_crash`` / ``n_no_code`` / ``n_sandbox_error`` for false negatives."""

    n: int
    n_passed: int          # all tests passed
    n_wrong: int           # ran, some tests failed
    n_no_code: int         # no ```python block
    n_timeout: int
    n_crash: int
    n_output_limit: int
    n_sandbox_error: int
    mean_score: float = 0.0
    elapsed_s: float = 0.0

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat dict for metric loggers."""
        return {prefix + k: v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_items(cls, items: Sequence[CodeResult], elapsed_s: float = 0.0) -> "BatchStats":
        c = collections.Counter(it.status for it in items)
        mean = sum(it.score for it in items) / len(items) if items else 0.0
        return cls(len(items), c[PASSED], c[WRONG], c[NO_CODE], c[TIMEOUT], c[CRASH], c[OUTPUT_LIMIT],
                   c[SANDBOX_ERROR], mean, elapsed_s)


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Per-item results (in input order) and batch statistics."""

    items: list[CodeResult]
    stats: BatchStats

    @property
    def scores(self) -> list[float]:
        return [it.score for it in self.items]

    @property
    def statuses(self) -> list[str]:
        return [it.status for it in self.items]

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(self.statuses))


def _judge(spec: _Spec, run: RunResult, all_or_nothing: bool) -> CodeResult:
    if not run.started:  # no untrusted code ran: the sandbox failed to start (or start-up hit its limit)
        why = "start-up timed out" if run.timed_out else f"start-up failed (exit status {run.returncode})"
        tail = run.stderr_tail.decode(errors="replace").strip()[-300:]
        return CodeResult(0.0, 0, spec.n_tests, SANDBOX_ERROR, (why + (": " + tail if tail else ""),),
                          run.elapsed_s)
    results: dict[int, dict] = {}
    load_error = None
    done = False
    any_timeout = any_error = any_output_limit = False
    for line in run.stdout.split(b"\n"):
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except Exception:  # noqa: BLE001  (garbage on the channel: ignore it)
            continue
        if not isinstance(msg, dict):
            continue
        if "load_error" in msg and load_error is None:
            load_error = str(msg["load_error"])[:300]
            any_timeout |= bool(msg.get("timeout"))
        elif msg.get("done") is True:
            done = True
        elif isinstance(msg.get("i"), int) and 0 <= msg["i"] < spec.n_tests and msg["i"] not in results:
            results[msg["i"]] = msg
    passed = 0
    details = []
    for i, (kind, exp) in enumerate(spec.expected):
        msg = results.get(i)
        if msg is None:
            details.append("not run" if load_error is None else "not run: " + load_error)
            continue
        ok = False
        if "e" in msg:
            any_timeout |= bool(msg.get("timeout"))
            any_output_limit |= bool(msg.get("output_limit"))
            any_error |= not (msg.get("timeout") or msg.get("output_limit"))
            details.append(str(msg["e"])[:200])
            continue
        if kind == "value" and "v" in msg:
            try:
                ok = values_equal(msg["v"], exp)
            except Exception:  # noqa: BLE001  (e.g. absurdly deep values)
                ok = False
        elif kind == "ok":
            ok = msg.get("ok") is True
        elif kind == "stdout" and isinstance(msg.get("out"), str):
            rc = msg.get("rc")
            if rc != 0:
                any_error = True
                details.append(f"exit status {rc}")
                continue
            ok = stdout_matches(msg["out"], exp)
        passed += ok
        details.append("ok" if ok else "wrong answer")
    total = spec.n_tests
    if passed == total and total > 0:
        status = PASSED
    elif run.timed_out:
        status = TIMEOUT
    elif run.output_exceeded:
        status = OUTPUT_LIMIT
    elif any_timeout:
        status = TIMEOUT
    elif any_output_limit:
        status = OUTPUT_LIMIT
    elif load_error is not None or not done or any_error:
        status = CRASH
    else:
        status = WRONG
    if all_or_nothing:
        sc = 1.0 if (status == PASSED) else 0.0
    else:
        sc = passed / total if total else 0.0
    return CodeResult(sc, passed, total, status, tuple(details), run.elapsed_s)


# --------------------------------------------------------------------------------------------------------
# Scorer
# --------------------------------------------------------------------------------------------------------


class CodeScorer:
    """A pool of ``workers`` sandbox slots, each with its own leased uid (so each slot's process limit is its
    own). :meth:`evaluate` / :meth:`score` are thread-safe; :meth:`score_batch` runs a batch in parallel.

    Args:
        workers: parallel slots (default: CPU count).
        timeout_s: wall-clock limit of one response (all its tests; interpreter start-up not included).
        test_timeout_s: limit per test (default ``timeout_s``).
        memory_mb, max_procs, ...: see :class:`~repirl_jax.rewards.sandbox.SandboxConfig`.
        all_or_nothing: score 1.0 only if every test passes, else 0.0.
        allow_unsandboxed: if the sandbox is unavailable, run unisolated (warns) instead of raising
            :class:`SandboxUnavailableError`.
    """

    def __init__(self, workers: int | None = None, *, timeout_s: float = 10.0, test_timeout_s: float | None = None,
                 all_or_nothing: bool = False, allow_unsandboxed: bool = False,
                 max_test_output_bytes: int = 1 << 20, config: SandboxConfig | None = None, **config_kw: Any):
        cfg = config or SandboxConfig()
        cfg = dataclasses.replace(cfg, timeout_s=timeout_s, allow_unsandboxed=allow_unsandboxed or
                                  cfg.allow_unsandboxed, **config_kw)
        self.cfg = cfg
        self.sandbox = Sandbox(cfg)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.test_timeout_s = test_timeout_s
        self.all_or_nothing = all_or_nothing
        self.max_test_output_bytes = max_test_output_bytes
        self._leases: list[UidLease] = []
        self._slots: queue.Queue = queue.Queue()
        if self.sandbox.backend == "bwrap":
            for _ in range(self.workers):
                lease = UidLease(cfg)
                self._leases.append(lease)
                self._slots.put(lease.uid)
        else:
            for _ in range(self.workers):
                self._slots.put(None)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    @property
    def uids(self) -> list[int]:
        return [lease.uid for lease in self._leases]

    @property
    def backend(self) -> str:
        return self.sandbox.backend

    def evaluate(self, response: str, tests: Any, *, fn_name: str | None = None, starter_code: str | None = None,
                 all_or_nothing: bool | None = None, timeout_s: float | None = None) -> CodeResult:
        if self._closed:
            raise RuntimeError("CodeScorer is closed")
        aon = self.all_or_nothing if all_or_nothing is None else all_or_nothing
        timeout_s = self.cfg.timeout_s if timeout_s is None else timeout_s
        test_timeout_s = min(timeout_s, self.test_timeout_s or timeout_s)
        program = extract_code(response)
        if program is None:
            spec_total = _count_tests(tests)
            return CodeResult(0.0, 0, spec_total, NO_CODE, ())
        spec = _build_spec(program, tests, fn_name, starter_code, test_timeout_s, self.max_test_output_bytes)
        if spec.n_tests == 0:
            return CodeResult(0.0, 0, 0, WRONG, ())
        job = dict(spec.job)
        if spec.mode == "inproc":
            job["prelude"] = PRELUDE
        job["isolated"] = self.sandbox.backend == "bwrap"
        uid = self._slots.get()
        t0 = time.monotonic()
        try:
            run = self.sandbox.run(HARNESS, job, uid=uid, timeout_s=timeout_s)
        except Exception as e:  # noqa: BLE001
            return CodeResult(0.0, 0, spec.n_tests, SANDBOX_ERROR, (repr(e)[:300],), time.monotonic() - t0)
        finally:
            self._slots.put(uid)
        return _judge(spec, run, aon)

    def score(self, response: str, tests: Any, **kw: Any) -> float:
        return self.evaluate(response, tests, **kw).score

    def score_batch(self, responses: Sequence[str], tests: Sequence[Any], *,
                    fn_names: Sequence[str | None] | None = None,
                    starter_codes: Sequence[str | None] | None = None,
                    all_or_nothing: bool | None = None) -> BatchResult:
        """Score ``responses[k]`` against ``tests[k]`` on all slots in parallel (results in input order)."""
        if len(responses) != len(tests):
            raise ValueError(f"{len(responses)} responses but {len(tests)} test sets")
        n = len(responses)
        fn_names = list(fn_names) if fn_names is not None else [None] * n
        starter_codes = list(starter_codes) if starter_codes is not None else [None] * n
        t0 = time.monotonic()
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="code-reward")
        futs = [self._pool.submit(self.evaluate, responses[k], tests[k], fn_name=fn_names[k],
                                  starter_code=starter_codes[k], all_or_nothing=all_or_nothing) for k in range(n)]
        items = []
        for f in futs:
            try:
                items.append(f.result())
            except Exception as e:  # noqa: BLE001  (bad test data: score 0, keep the batch going)
                items.append(CodeResult(0.0, 0, 0, SANDBOX_ERROR, (repr(e)[:300],)))
        return BatchResult(items, BatchStats.from_items(items, time.monotonic() - t0))

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for lease in self._leases:
            lease.release()
        self._leases = []

    def __enter__(self) -> "CodeScorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _count_tests(tests: Any) -> int:
    try:
        return _build_spec("", tests, None, None, 1.0, 1).n_tests
    except Exception:  # noqa: BLE001
        return 0


_default: dict[tuple, CodeScorer] = {}
_default_lock = threading.Lock()


def _default_scorer(allow_unsandboxed: bool) -> CodeScorer:
    key = (allow_unsandboxed,)
    with _default_lock:
        if key not in _default:
            _default[key] = CodeScorer(allow_unsandboxed=allow_unsandboxed)
        return _default[key]


def evaluate(response: str, tests: list | str | dict, *, fn_name: str | None = None,
             starter_code: str | None = None, all_or_nothing: bool = False, timeout_s: float | None = None,
             allow_unsandboxed: bool = False, scorer: CodeScorer | None = None) -> CodeResult:
    """Run the last ```python block of ``response`` against ``tests`` in the sandbox (see module doc)."""
    sc = scorer or _default_scorer(allow_unsandboxed)
    return sc.evaluate(response, tests, fn_name=fn_name, starter_code=starter_code, all_or_nothing=all_or_nothing,
                       timeout_s=timeout_s)


def score(response: str, tests: list | str | dict, *, fn_name: str | None = None, starter_code: str | None = None,
          all_or_nothing: bool = False, timeout_s: float | None = None, allow_unsandboxed: bool = False,
          scorer: CodeScorer | None = None) -> float:
    """Fraction of ``tests`` passed by the response's last ```python block (1.0/0.0 if ``all_or_nothing``)."""
    return evaluate(response, tests, fn_name=fn_name, starter_code=starter_code, all_or_nothing=all_or_nothing,
                    timeout_s=timeout_s, allow_unsandboxed=allow_unsandboxed, scorer=scorer).score


def score_batch(responses: Sequence[str], tests: Sequence[Any], *, workers: int | None = None,
                fn_names: Sequence[str | None] | None = None, starter_codes: Sequence[str | None] | None = None,
                all_or_nothing: bool = False, timeout_s: float = 10.0, allow_unsandboxed: bool = False,
                **config_kw: Any) -> BatchResult:
    """Score a batch on a fresh pool of ``workers`` slots (for repeated batches keep a :class:`CodeScorer`)."""
    with CodeScorer(workers, timeout_s=timeout_s, all_or_nothing=all_or_nothing,
                    allow_unsandboxed=allow_unsandboxed, **config_kw) as sc:
        return sc.score_batch(responses, tests, fn_names=fn_names, starter_codes=starter_codes)
