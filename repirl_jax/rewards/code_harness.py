"""The sources that run inside the code sandbox, as strings: the value encoder, LeetCode's prelude, and the
harness that runs a program's tests and reports what it computed on a result channel.

Stdlib only (the sandbox has nothing else); the harness reads the global ``JOB`` that the sandbox's
bootstrap sets (`rewards/sandbox.py`). `rewards/code.py` builds the jobs and judges the reports; the host
encodes expected values with `encode`, the same function the harness runs, so both sides compare one form.
"""

# Encodes plain data into JSON-able form: lists/tuples -> list, set -> {"__set__": [...]},
# dict -> {"__dict__": [[k, v], ...]}; any other type (also subclasses of the plain types, which could
# override __eq__) -> {"__obj__": type name}, which equals nothing.
ENCODE_SRC = r'''
def _enc(x, _depth=0):
    if _depth > 200:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if t is list or t is tuple:
        return [_enc(v, _depth + 1) for v in x]
    if t is set or t is frozenset:
        return {"__set__": [_enc(v, _depth + 1) for v in x]}
    if t is dict:
        return {"__dict__": [[_enc(k, _depth + 1), _enc(v, _depth + 1)] for k, v in x.items()]}
    return {"__obj__": t.__name__}
'''
_ns: dict = {}
exec(ENCODE_SRC, _ns)
encode = _ns["_enc"]  # the host's copy: expected values in the same form

PRELUDE = r'''
from typing import *
from collections import *
from functools import *
from itertools import *
from heapq import *
from bisect import *
from math import inf, gcd, sqrt, isqrt, ceil, floor, log, log2, log10, comb, perm, factorial, lcm, prod
import math, heapq, bisect, itertools, functools, collections, string, re, sys, random, operator, copy
import typing

class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next

class TreeNode:
    def __init__(self, val=0, left=None, right=None):
        self.val = val
        self.left = left
        self.right = right
'''

HARNESS = ENCODE_SRC + r'''
import builtins, json, os, select, signal, sys, time

_res_fd = os.dup(1)
os.set_inheritable(_res_fd, False)
_null = os.open("/dev/null", os.O_RDWR)
os.dup2(_null, 1)
os.dup2(_null, 2)


def _send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        n = os.write(_res_fd, data)
        data = data[n:]


def _err(e):
    return (type(e).__name__ + ": " + str(e))[:300]


class _TestTimeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _run_inproc(job):
    g = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compile(PRELUDE, "<prelude>", "exec"), g)
        code = compile(job["program"], "<solution>", "exec")
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, job["test_timeout"])
        try:
            exec(code, g)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TestTimeout:
        _send({"load_error": "timeout", "timeout": True})
        return
    except BaseException as e:  # SystemExit too: the program must not end before its checks
        _send({"load_error": _err(e)})
        return
    for step in job["steps"]:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, job["test_timeout"])
        try:
            if "exec" in step:
                exec(step["exec"], g)
            elif "eval" in step:
                v = _enc(eval(step["eval"], g))
                signal.setitimer(signal.ITIMER_REAL, 0)
                _send({"i": step["i"], "v": v})
            elif "assert" in step:
                exec(step["assert"], g)
                signal.setitimer(signal.ITIMER_REAL, 0)
                _send({"i": step["i"], "ok": True})
            elif "call" in step:
                name = step["call"]
                args = [json.loads(line) for line in step["input"].split("\n") if line.strip()]
                cls = g.get("Solution")
                if name and isinstance(cls, type) and hasattr(cls, name):
                    fn = getattr(cls(), name)
                elif name and callable(g.get(name)):
                    fn = g[name]
                else:
                    raise NameError("no function %r in class Solution or at top level" % (name,))
                v = _enc(fn(*args))
                signal.setitimer(signal.ITIMER_REAL, 0)
                _send({"i": step["i"], "v": v})
        except _TestTimeout:
            if "i" in step:
                _send({"i": step["i"], "e": "timeout", "timeout": True})
        except BaseException as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if "i" in step:
                _send({"i": step["i"], "e": _err(e)})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    _send({"done": True})


def _kill_others(pid):
    try:
        if JOB.get("isolated"):
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    # Inside the sandbox everything in this PID namespace but us and its init runs as our uid: kill(-1)
    # also reaps leftovers that left the test's process group. Never outside it (kill(-1) as root there
    # would signal the whole machine).
    if JOB.get("isolated") and os.getuid() != 0 and os.getpid() < 1000:
        for _ in range(3):
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                break
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


def _run_stdin(job):
    try:
        compile(job["program"], "<solution>", "exec")
    except BaseException as e:
        _send({"load_error": _err(e)})
        return
    workdir = os.getcwd()  # the sandbox's private /tmp (unsandboxed: a throw-away directory)
    path = os.path.join(workdir, ".solution.py")
    with open(path, "w") as f:
        f.write(job["program"])
    os.chmod(path, 0o444)
    cap = job["max_output"]
    for i, text in enumerate(job["inputs"]):
        infd = os.memfd_create("stdin")
        data = text.encode()
        while data:
            data = data[os.write(infd, data):]
        os.lseek(infd, 0, os.SEEK_SET)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(infd, 0)
                os.dup2(w, 1)
                os.dup2(_null, 2)
                os.closerange(3, 1 << 16)
                if JOB.get("isolated"):
                    os.setpgid(0, 0)
                os.chdir(workdir)
                os.execv(sys.executable, [sys.executable, "-I", "-B", path])
            finally:
                os._exit(127)
        if JOB.get("isolated"):
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass
        os.close(w)
        os.close(infd)
        out = bytearray()
        over = timed_out = False
        status = None
        deadline = time.monotonic() + job["test_timeout"]
        eof = False
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], min(left, 0.02))
            if status is None:
                wpid, st = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    status = st
                    # the program has exited: take what it wrote, do not wait for processes it left behind
                    os.set_blocking(r, False)
                    ready = [r]
            if not ready:
                continue
            while True:
                try:
                    chunk = os.read(r, 1 << 16)
                except BlockingIOError:
                    chunk = None
                if not chunk:
                    eof = chunk is not None or status is not None
                    break
                out += chunk
                if len(out) > cap:
                    over = eof = True
                    break
                if status is None:
                    break
        if status is None and not (timed_out or over):
            # stdout closed: wait (bounded) for the program itself to exit
            while time.monotonic() < deadline:
                wpid, st = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    status = st
                    break
                time.sleep(0.002)
            if status is None:
                timed_out = True
        _kill_others(pid)
        os.close(r)
        if status is None:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if timed_out:
            _send({"i": i, "e": "timeout", "timeout": True})
        elif over:
            _send({"i": i, "e": "output limit exceeded", "output_limit": True})
        else:
            rc = os.waitstatus_to_exitcode(status)
            _send({"i": i, "out": out.decode("utf-8", "replace"), "rc": rc})
    _send({"done": True})


PRELUDE = JOB.get("prelude", "")
if JOB["mode"] == "stdin":
    _run_stdin(JOB)
else:
    _run_inproc(JOB)
os._exit(0)  # do not wait for threads the program left running
'''
