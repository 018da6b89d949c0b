"""Outcome reward for math problems: is the final answer of a response equivalent to the ground truth?

The equivalence check is math-verify's (https://github.com/huggingface/Math-Verify): both answers are parsed
from LaTeX into SymPy and compared (numerically, symbolically, as sets / intervals / tuples / relations, and
as strings as a last resort). There is no hand-written answer normaliser here; this module only

1. extracts the answer text from a response (:func:`extract_answer`: the content of the last complete
   ``\\boxed{...}`` / ``\\fbox{...}``, else the text after the last final-answer phrase such as
   "The final answer is X", "The answer is X", "Answer: X" or a GSM8K-style ``#### X`` line),
2. parses that text and the ground truth (:func:`normalize_ground_truth`) with the same LaTeX parser
   (``math_verify.parse`` on ``\\boxed{<text>}``), after rewriting two number spellings math-verify
   misreads (E-notation such as ``8.7e8``, read as 8.7*e*8, and a digit-attached imaginary unit ``7i``;
   see ``_prepare_latex``), and
3. calls ``math_verify.verify(gold, prediction)``.

Time limits
-----------
math-verify enforces its own time limits with ``signal.alarm``. That only works on the main thread of the
main interpreter; elsewhere math-verify 0.9 raises ``ValueError`` (older releases and some frameworks
swallowed the error and silently scored 0). SymPy can also hang on adversarial input (e.g. a power tower
``9^{9^{9^{9}}}``), and not every hang is interruptible by a signal. So this module always calls math-verify
with its signal-based time limits disabled (``parsing_timeout=None``, ``timeout_seconds=None``) and enforces
its own limits:

* :class:`MathScorer` (and :func:`score_batch`) score batches in a reusable pool of worker *processes*
  (``forkserver`` or ``spawn`` start method; never ``fork``: the parent is a multi-threaded JAX process).
  Every item gets a wall-clock limit; a worker that exceeds it is killed (SIGKILL) and replaced, and the
  item scores 0 with status ``"timeout"``. A worker that crashes gives status ``"error"``. A batch always
  completes in bounded time (about ``ceil(n / workers) * timeout_s`` in the worst case).
* :func:`score` / :func:`grade` / :func:`equivalent` (one item) run in-process when called on the main
  thread, interrupted by this module's own ``SIGALRM`` interval timer (the limit may be fractional). Called
  from any other thread they are sent to a shared single-worker :class:`MathScorer` instead, so they never
  touch signals off the main thread. A signal cannot interrupt a single long C call; when a hard guarantee
  matters, use :class:`MathScorer`.

Per batch, :class:`BatchStats` reports how many responses had no extractable answer (``n_no_answer``), how
many hit the time limit (``n_timeout``) and how many failed (``n_error``), so false negatives stay visible.

Example::

    from repirl_jax.rewards.math import MathScorer

    with MathScorer(workers=2, timeout_s=10.0) as scorer:
        result = scorer.score_batch(responses, ground_truths)
    result.scores          # [1.0, 0.0, ...]
    result.stats.as_dict(prefix="reward/math/")   # {"reward/math/n": ..., "reward/math/n_timeout": ...}
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import wait as _wait_ready
from typing import Any, Sequence

from repirl_jax.rewards.math_grading import (  # noqa: F401  (re-exported: the public API is here)
    CORRECT,
    DEFAULT_TIMEOUT_S,
    ERROR,
    INCORRECT,
    NO_ANSWER,
    STATUSES,
    TIMEOUT,
    BatchResult,
    BatchStats,
    ItemResult,
    _equivalent_unlimited,
    _grade_unlimited,
    _math_verify,
    _run_task,
    extract_answer,
    last_boxed,
    normalize_ground_truth,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "STATUSES",
    "BatchResult",
    "BatchStats",
    "ItemResult",
    "MathScorer",
    "equivalent",
    "extract_answer",
    "grade",
    "last_boxed",
    "normalize_ground_truth",
    "score",
    "score_batch",
]


# --------------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------------


def _exit_with_parent() -> None:
    """Worker side: exit if the process that started us goes away (e.g. the trainer was SIGKILLed)."""
    ppid = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != ppid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_main(conn: Any) -> None:
    """Worker loop: receive ``(batch, index, kind, args)``, send ``(batch, index, "ok"|"error", payload)``.

    math-verify runs with its signal-based timeouts disabled; the parent kills this process if an item
    exceeds its time limit.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _exit_with_parent()
    _math_verify()  # an import error ends the worker before "ready" (the parent then gives up after retries)
    try:  # warm-up: math-verify's lazily built regexes / parser, before taking work
        _grade_unlimited("\\boxed{\\frac{1}{2}}", "0.5")
    except Exception:
        pass
    try:
        conn.send(("ready", os.getpid()))
    except OSError:
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        batch, index, kind, args = msg
        try:
            out = (batch, index, "ok", _run_task(kind, args))
        except Exception as e:  # never str(e): printing some SymPy objects can itself hang
            out = (batch, index, "error", type(e).__name__)
        try:
            conn.send(out)
        except OSError:
            return


def _default_start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class _Worker:
    __slots__ = ("proc", "conn", "ready", "index", "deadline", "started")

    def __init__(self, proc: Any, conn: Any):
        self.proc = proc
        self.conn = conn
        self.ready = False
        self.index: int | None = None  # task index in the current batch, None when idle
        self.deadline = 0.0
        self.started = time.monotonic()


@dataclasses.dataclass
class _BatchRun:
    """One `MathScorer._run` call's state: its tasks, their results so far, what is left."""
    batch: int
    kind: str
    tasks: Sequence[tuple]
    timeout_s: float
    results: list = dataclasses.field(init=False)
    pending: collections.deque = dataclasses.field(init=False)
    remaining: int = dataclasses.field(init=False)
    failed_starts: int = 0

    def __post_init__(self):
        self.results = [None] * len(self.tasks)
        self.pending = collections.deque(range(len(self.tasks)))
        self.remaining = len(self.tasks)


class MathScorer:
    """A reusable pool of worker processes that grade math answers with per-item wall-clock limits.

    Args:
        workers: number of worker processes.
        timeout_s: default wall-clock limit per item, seconds (measured from dispatch to the worker).
        start_method: ``"forkserver"`` (default where available) or ``"spawn"``. ``"fork"`` is refused: the
            parent is typically a multi-threaded JAX process.
        startup_timeout_s: limit for a worker to start and become ready; repeated start-up failures raise
            ``RuntimeError`` instead of hanging.

    Workers start in the constructor (in the background); the first batch waits for them. Start-up
    (interpreter, math-verify/SymPy import and a warm-up parse: about 0.4-1 s on a 2-core machine, plus
    whatever the program's main module imports, since spawned workers re-import it) is paid once; a worker
    killed for a timeout is replaced while the batch continues on the others.

    Use as a context manager or call :meth:`close`. Calls are serialised with a lock, so one scorer may be
    shared by threads; it can be used from any thread (it uses no signals in the parent).

    As with any spawn-based pool, the program's main module must be importable without side effects
    (guard the entry point with ``if __name__ == "__main__":``).
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        start_method: str | None = None,
        startup_timeout_s: float = 120.0,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        start_method = start_method or _default_start_method()
        if start_method == "fork":
            raise ValueError("start_method 'fork' is unsafe in a multi-threaded (JAX) parent; use forkserver or spawn")
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.n_workers = workers
        self.n_restarts = 0  # workers replaced after a timeout, crash or failed start
        self._ctx = multiprocessing.get_context(start_method)
        self._lock = threading.Lock()
        self._batch_ids = itertools.count()
        self._closed = False
        self._workers: list[_Worker] = [self._start_worker() for _ in range(workers)]

    # -- lifecycle -------------------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child_conn,), name="math-verify-worker", daemon=True)
        proc.start()
        child_conn.close()
        return _Worker(proc, parent_conn)

    @staticmethod
    def _stop_worker(w: _Worker, graceful: bool) -> None:
        try:
            if graceful and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
                w.proc.join(timeout=1.0)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5.0)
        finally:
            try:
                w.conn.close()
            except OSError:
                pass
            try:
                w.proc.close()
            except ValueError:  # still running (could not be reaped in time)
                pass

    def _replace(self, w: _Worker) -> _Worker:
        self._stop_worker(w, graceful=False)
        new = self._start_worker()
        self._workers[self._workers.index(w)] = new
        self.n_restarts += 1
        return new

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until every worker has started (optional; batches wait by themselves). True if all ready."""
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + (self.startup_timeout_s if timeout_s is None else timeout_s)
            while True:
                waiting = [w for w in self._workers if not w.ready]
                if not waiting:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for obj in _wait_ready([w.conn for w in waiting] + [w.proc.sentinel for w in waiting], left):
                    for w in waiting:
                        if obj is w.conn or obj == w.proc.sentinel:
                            self._poll_idle(w)

    def _poll_idle(self, w: _Worker) -> None:
        """Read a message from a worker with no task (only "ready" is expected); replace it if it died."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready = True
        except (EOFError, OSError):
            self._replace(w)
            return
        if not w.proc.is_alive() and not w.conn.poll():
            self._replace(w)

    def close(self) -> None:
        """Stop the workers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for w in self._workers:
                self._stop_worker(w, graceful=True)
            self._workers = []

    def __enter__(self) -> "MathScorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                for w in self._workers:
                    if w.proc.is_alive():
                        w.proc.kill()
        except Exception:
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MathScorer is closed")

    # -- scheduling ------------------------------------------------------------------------------------

    def _run(self, kind: str, tasks: Sequence[tuple], timeout_s: float) -> list[tuple[str, Any]]:
        """Run tasks in the pool. Returns per task ``("ok", value)``, ``("timeout", None)`` or ``("error", why)``."""
        run = _BatchRun(next(self._batch_ids), kind, tasks, timeout_s)
        try:
            while run.remaining:
                self._dispatch(run)
                self._receive(run)
                self._expire(run)
                if run.failed_starts > 2 * self.n_workers + 1:
                    raise RuntimeError(
                        f"math-verify workers keep failing to start ({run.failed_starts} failures in a row)")
        except BaseException:
            # Interrupted (or broken pool): workers still busy on this batch are killed so the next batch
            # starts clean.
            for w in list(self._workers):
                if w.index is not None:
                    w.index = None
                    self._replace(w)
            raise
        return run.results  # type: ignore[return-value]

    def _finish(self, run: "_BatchRun", w: _Worker, outcome: tuple[str, Any]) -> None:
        run.results[w.index] = outcome
        w.index = None
        run.remaining -= 1

    def _lost(self, run: "_BatchRun", w: _Worker, why: str) -> None:
        """A worker died or its pipe broke: its task (if any) fails with `why`; a replacement starts."""
        if w.index is not None:
            self._finish(run, w, ("error", why))
        elif not w.ready:
            run.failed_starts += 1
        self._replace(w)

    def _dispatch(self, run: "_BatchRun") -> None:
        """Every ready, idle worker takes the next pending task."""
        now = time.monotonic()
        for w in self._workers:
            if w.ready and w.index is None and run.pending:
                i = run.pending.popleft()
                try:
                    w.conn.send((run.batch, i, run.kind, run.tasks[i]))
                except OSError:
                    run.pending.appendleft(i)
                    self._lost(run, w, "worker pipe closed")
                    continue
                w.index, w.deadline = i, now + run.timeout_s

    def _receive(self, run: "_BatchRun") -> None:
        """Wait (until the nearest deadline) for answers, ready messages and exits, and take them in."""
        deadlines = [w.deadline if w.index is not None else w.started + self.startup_timeout_s
                     for w in self._workers if w.index is not None or not w.ready]
        wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.0
        by_obj: dict[Any, _Worker] = {}
        for w in self._workers:
            by_obj[w.conn] = w
            by_obj[w.proc.sentinel] = w
        ready = _wait_ready(list(by_obj), wait_s)
        # Messages first (a worker may have answered and then exited), then exits.
        handled: set[int] = set()
        for obj in sorted(ready, key=lambda o: not hasattr(o, "recv")):
            w = by_obj[obj]
            if id(w) in handled or w not in self._workers:
                continue
            try:
                while w.conn.poll():
                    msg = w.conn.recv()
                    if msg[0] == "ready":
                        w.ready = True
                        run.failed_starts = 0
                    elif msg[0] == run.batch and msg[1] == w.index:
                        self._finish(run, w, (msg[2], msg[3]))
            except (EOFError, OSError):
                handled.add(id(w))
                self._lost(run, w, f"worker died (exit code {w.proc.exitcode})")
                continue
            if not hasattr(obj, "recv") or not w.proc.is_alive():
                w.proc.join(timeout=1.0)
                if not w.proc.is_alive():
                    handled.add(id(w))
                    self._lost(run, w, f"worker died (exit code {w.proc.exitcode})")

    def _expire(self, run: "_BatchRun") -> None:
        """Tasks past their time limit end as timeouts (the worker is replaced); so do slow start-ups."""
        now = time.monotonic()
        for w in list(self._workers):
            if w.index is not None and now >= w.deadline:
                self._finish(run, w, ("timeout", None))
                self._replace(w)
            elif not w.ready and now - w.started > self.startup_timeout_s:
                run.failed_starts += 1
                self._replace(w)

    # -- public API ------------------------------------------------------------------------------------

    def score_batch(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[str | Sequence[str]],
        timeout_s: float | None = None,
    ) -> BatchResult:
        """Grade ``responses[i]`` against ``ground_truths[i]`` for all i.

        Args:
            responses: model responses (None is treated as an empty response).
            ground_truths: a string (number or LaTeX) or a list of strings each (see
                :func:`normalize_ground_truth`).
            timeout_s: per-item wall-clock limit; defaults to the scorer's ``timeout_s``.

        Returns:
            :class:`BatchResult` with items in input order and :class:`BatchStats`. Items that time out or
            crash score 0.0 with status ``"timeout"`` / ``"error"``; responses without an extractable
            answer score 0.0 with status ``"no_answer"``.
        """
        if len(responses) != len(ground_truths):
            raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
        t0 = time.monotonic()
        tasks = [(r or "", normalize_ground_truth(g)) for r, g in zip(responses, ground_truths)]
        with self._lock:
            self._check_open()
            raw = self._run("grade", tasks, self.timeout_s if timeout_s is None else float(timeout_s))
        items = []
        for outcome, payload in raw:
            if outcome == "ok":
                status, value, answer = payload
                items.append(ItemResult(value, status, answer))
            else:
                items.append(ItemResult(0.0, TIMEOUT if outcome == "timeout" else ERROR, None))
        stats = BatchStats.from_items(items, time.monotonic() - t0)
        if stats.n_timeout or stats.n_error:
            logger.warning(
                "math reward: %d/%d timed out, %d/%d errors, %d/%d without an answer (scored 0)",
                stats.n_timeout, stats.n, stats.n_error, stats.n, stats.n_no_answer, stats.n)
        return BatchResult(items, stats)

    def equivalent_batch(self, pairs: Sequence[tuple[str, str]], timeout_s: float | None = None) -> list[bool]:
        """math-verify equivalence of each ``(a, b)`` pair of answer strings (see :func:`equivalent`).
        Pairs that time out or fail count as not equivalent."""
        with self._lock:
            self._check_open()
            raw = self._run("equiv", [(a or "", b or "") for a, b in pairs],
                            self.timeout_s if timeout_s is None else float(timeout_s))
        return [outcome == "ok" and bool(value) for outcome, value in raw]

    def equivalent(self, a: str, b: str, timeout_s: float | None = None) -> bool:
        """:func:`equivalent` for one pair, in the pool."""
        return self.equivalent_batch([(a, b)], timeout_s)[0]


# --------------------------------------------------------------------------------------------------------
# Shared pools and single-item API
# --------------------------------------------------------------------------------------------------------

_SHARED: dict[int, MathScorer] = {}
_SHARED_LOCK = threading.Lock()


def _shared_scorer(workers: int) -> MathScorer:
    with _SHARED_LOCK:
        scorer = _SHARED.get(workers)
        if scorer is None or scorer._closed:
            scorer = _SHARED[workers] = MathScorer(workers=workers)
        return scorer


@atexit.register
def _close_shared() -> None:
    for scorer in list(_SHARED.values()):
        try:
            scorer.close()
        except Exception:
            pass
    _SHARED.clear()


def score_batch(
    responses: Sequence[str],
    ground_truths: Sequence[str | Sequence[str]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int = 2,
) -> BatchResult:
    """:meth:`MathScorer.score_batch` on a process-wide pool of ``workers`` workers, created on first use and
    kept for later calls (closed at exit). Prefer an explicit :class:`MathScorer` to control its lifetime."""
    return _shared_scorer(workers).score_batch(responses, ground_truths, timeout_s=timeout_s)


class _ItemTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that math-verify's ``except Exception`` lets it pass."""


def _call_with_alarm(timeout_s: float, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on the main thread, interrupted after ``timeout_s`` seconds by ``_ItemTimeout``."""
    armed = True

    def on_alarm(signum: int, frame: Any) -> None:
        if armed:
            raise _ItemTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    t0 = time.monotonic()
    prev_delay, prev_interval = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        result = fn(*args)
        armed = False
        return result
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if prev_delay > 0:  # someone else's timer was running: give it back what is left
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, prev_delay - (time.monotonic() - t0)), prev_interval)


def _in_process_ok() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


def grade(response: str, ground_truth: str | Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> ItemResult:
    """Grade one response: :class:`ItemResult` with score, status and extracted answer.

    On the main thread this runs in-process under a ``SIGALRM`` interval timer; on any other thread it runs
    in a shared single-worker :class:`MathScorer` (math-verify's own signal-based limits are never used).
    """
    if not _in_process_ok():
        return _shared_scorer(1).score_batch([response], [ground_truth], timeout_s=timeout_s).items[0]
    gold = normalize_ground_truth(ground_truth)
    try:
        status, value, answer = _call_with_alarm(timeout_s, _grade_unlimited, response or "", gold)
    except _ItemTimeout:
        logger.warning("math reward: item timed out after %.1f s (scored 0)", timeout_s)
        return ItemResult(0.0, TIMEOUT, None)
    except Exception as e:
        logger.warning("math reward: item failed with %s (scored 0)", type(e).__name__)
        return ItemResult(0.0, ERROR, None)
    return ItemResult(value, status, answer)


def score(response: str, ground_truth: str | Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """1.0 if the final answer of ``response`` is math-verify-equivalent to ``ground_truth``, else 0.0.

    The answer is the last ``\\boxed{}`` or the final-answer line (:func:`extract_answer`); the ground truth
    is a number, a LaTeX string or a list of them (:func:`normalize_ground_truth`). No answer, a timeout
    (after ``timeout_s`` seconds) or an error scores 0.0; use :func:`grade` to see which, or
    :class:`MathScorer` for batches with counts.
    """
    return grade(response, ground_truth, timeout_s).score


def equivalent(a: str, b: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two answer strings (e.g. outputs of :func:`extract_answer`) are math-verify-equivalent.

    Both are parsed as LaTeX and compared in both directions (``verify`` is asymmetric: ``x=1`` vs ``1``),
    so the relation is symmetric; use it to group sampled answers for a majority vote. A timeout or error
    gives False. Runs like :func:`grade` (in-process on the main thread, else in the shared pool).
    """
    if not _in_process_ok():
        return _shared_scorer(1).equivalent(a, b, timeout_s=timeout_s)
    try:
        return bool(_call_with_alarm(timeout_s, _equivalent_unlimited, a or "", b or ""))
    except _ItemTimeout:
        logger.warning("math reward: equivalence check timed out after %.1f s", timeout_s)
        return False
    except Exception:
        return False
