"""Code reward (repirl_jax.rewards.code) and its sandbox: real benchmark problems, and hostile programs that
must be contained (scored 0, within the time limit, host unharmed).

The sandbox needs root + bubblewrap (``bash tools/setup_sandbox.sh``). Without it these tests are skipped on
a developer machine but FAIL in CI (CI=true), so CI can never pass without really running them.
"""

import dataclasses
import json
import os
import secrets
import shutil
import socket
import subprocess
import time

import pytest

from repirl_jax.data import benchmarks
from repirl_jax.rewards import code
from repirl_jax.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, UidLease, sandbox_status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(benchmarks.FILES_DIR, "code")

TIMEOUT = 3.0          # wall-clock limit per response in the hostile tests (2.0 timed out a correct
                       # solution once in a full CI run on 2 loaded cores)
SLACK = 2.5            # start-up + teardown allowance on a loaded 2-core machine


def _rows(name):
    with open(os.path.join(BENCH, name)) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def bench():
    lc = {r["task_id"]: r for r in _rows("leetcode_prime.jsonl")}
    lcb = _rows("livecodebench_rllm_2408_2501_public_tests.jsonl")
    return lc, lcb


@pytest.fixture(scope="module")
def scorer():
    ok, reason = sandbox_status()
    if not ok:
        msg = f"code sandbox unavailable: {reason}"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("CI must run the sandbox tests for real: " + msg)
        pytest.skip(msg)
    sc = code.CodeScorer(2, timeout_s=TIMEOUT, memory_mb=256, max_procs=16)
    yield sc
    sc.close()
    assert not _procs_of(sc.uids)


def _procs_of(uids):
    """Host processes whose real uid is one of ``uids``."""
    found = []
    uids = {str(u) for u in uids}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if line.split()[1] in uids:
                            found.append(int(pid))
                        break
        except OSError:
            continue
    return found


def _wait_no_procs(uids, within=2.0):
    end = time.monotonic() + within
    while _procs_of(uids) and time.monotonic() < end:
        time.sleep(0.05)
    return _procs_of(uids)


def _py(src):
    return f"Here is my solution.\n\n```python\n{src}\n```\n"


@pytest.fixture(scope="module")
def raw(scorer):
    """Run a raw job in the sandbox (its stdout comes back to the test) with the scorer's settings."""
    lease = UidLease(scorer.cfg)

    def run(src, timeout_s=TIMEOUT):
        r = scorer.sandbox.run(src, uid=lease.uid, timeout_s=timeout_s)
        assert r.backend == "bwrap"
        return r

    run.uid = lease.uid
    yield run
    lease.release()


# --------------------------------------------------------------------------------------------------------
# Real problems: correct solutions score 1.0, wrong ones less
# --------------------------------------------------------------------------------------------------------

PUSHES_OK = """
class Solution:
    def minimumPushes(self, word: str) -> int:
        return sum(i // 8 + 1 for i in range(len(word)))
"""
PUSHES_WRONG = """
class Solution:
    def minimumPushes(self, word: str) -> int:
        return sum(i // 9 + 1 for i in range(len(word)))
"""
# ListNode comes from the LeetCode prelude (the response does not define it).
DOUBLE_OK = """
class Solution:
    def doubleIt(self, head):
        digits = []
        while head:
            digits.append(str(head.val))
            head = head.next
        out = None
        for d in reversed(str(2 * int("".join(digits)))):
            out = ListNode(int(d), out)
        return out
"""
DOUBLE_WRONG = DOUBLE_OK.replace("2 * int", "3 * int")

SECOND_LARGEST_OK = """
import sys
data = sys.stdin.read().split()
n = int(data[0]); a = list(map(int, data[1:1 + n]))
print(a.index(sorted(a)[-2]) + 1)
"""
SECOND_LARGEST_WRONG = SECOND_LARGEST_OK.replace("[-2]", "[-1]")

SHORTEST_OK = """
from collections import deque
class Solution:
    def shortestDistanceAfterQueries(self, n: int, queries: List[List[int]]) -> List[int]:
        adj = [[i + 1] for i in range(n - 1)] + [[]]
        out = []
        for u, v in queries:
            adj[u].append(v)
            dist = [-1] * n
            dist[0] = 0
            q = deque([0])
            while q:
                x = q.popleft()
                for y in adj[x]:
                    if dist[y] < 0:
                        dist[y] = dist[x] + 1
                        q.append(y)
            out.append(dist[n - 1])
        return out
"""
SHORTEST_WRONG = SHORTEST_OK.replace("out.append(dist[n - 1])", "out.append(dist[n - 1] + (u == 0))")


def _lcb_row(lcb, needle):
    return next(r for r in lcb if needle in (r["starter_code"] or r["problem"]))


def test_leetcode_prime_correct_and_wrong(scorer, bench):
    lc, _ = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]
    r = scorer.evaluate(_py(PUSHES_OK), pushes["test"])
    assert (r.score, r.status, r.total) == (1.0, code.PASSED, 100)
    r = scorer.evaluate(_py(PUSHES_WRONG), pushes["test"])
    assert 0.0 < r.score < 1.0 and r.status == code.WRONG
    assert scorer.score(_py(PUSHES_WRONG), pushes, all_or_nothing=True) == 0.0

    double = lc["weekly-contest-358-double-a-number-represented-as-a-linked-list"]
    assert scorer.score(_py(DOUBLE_OK), double["test"]) == 1.0
    assert scorer.score(_py(DOUBLE_WRONG), double["test"]) < 1.0


def test_livecodebench_stdin_correct_and_wrong(scorer, bench):
    _, lcb = bench
    row = _lcb_row(lcb, "Which element in A is the second largest?")
    assert row["tests"][0]["testtype"] == "stdin"
    r = scorer.evaluate(_py(SECOND_LARGEST_OK), row["tests"])
    assert (r.score, r.status) == (1.0, code.PASSED), r
    assert scorer.score(_py(SECOND_LARGEST_WRONG), row["tests"]) < 1.0


def test_livecodebench_functional_correct_and_wrong(scorer, bench):
    _, lcb = bench
    row = _lcb_row(lcb, "def shortestDistanceAfterQueries")
    assert row["tests"][0]["testtype"] == "functional"
    # function name from the starter code, from the row, or (fallback) from the response's class Solution
    assert scorer.score(_py(SHORTEST_OK), row["tests"], starter_code=row["starter_code"]) == 1.0
    assert scorer.score(_py(SHORTEST_OK), row) == 1.0
    assert scorer.score(_py(SHORTEST_OK), row["tests"]) == 1.0
    assert scorer.score(_py(SHORTEST_OK), row["tests"], fn_name="shortestDistanceAfterQueries") == 1.0
    wrong = scorer.evaluate(_py(SHORTEST_WRONG), row)
    assert wrong.score < 1.0 and wrong.status == code.WRONG


def test_module_level_score_and_last_block(scorer, bench):
    lc, _ = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]
    # the last ```python block counts
    resp = _py(PUSHES_WRONG) + "\nActually, fixed:\n" + _py(PUSHES_OK)
    assert code.score(resp, pushes["test"], scorer=scorer) == 1.0
    assert code.extract_code("```python\nprint(1)\n") is None  # unterminated: no program
    r = scorer.evaluate("class Solution: pass  # no fenced block", pushes["test"])
    assert (r.score, r.status) == (0.0, code.NO_CODE)


# --------------------------------------------------------------------------------------------------------
# Fail closed: a program that raises or exits before its checks never passes
# --------------------------------------------------------------------------------------------------------

EARLY_EXITS = [
    "import sys\nsys.exit(0)\n" + PUSHES_OK,
    "import os\nos._exit(0)\n" + PUSHES_OK,
    PUSHES_OK + "\nraise RuntimeError('boom')\n",
    "class Solution:\n    def minimumPushes(self, word):\n        raise ValueError(word)\n",
    "class Solution:\n    def minimumPushes(self, word):\n        import os; os._exit(0)\n",
    "class Solution:\n    def minimumPushes(self, word):\n        raise SystemExit(0)\n",
    "def broken(:\n",
    # forge results: fake 'ok'/'done' lines on every fd, then leave before any check runs
    "import os\nfor fd in range(0, 64):\n    try:\n        os.write(fd, b''.join(b'{\"i\": %d, \"ok\": true}\\n' % i"
    " for i in range(200)) + b'{\"done\": true}\\n')\n    except OSError:\n        pass\nos._exit(0)\n",
    "print('All tests passed!')\nimport sys\nsys.exit(0)\n",
]


@pytest.mark.parametrize("prog", EARLY_EXITS, ids=range(len(EARLY_EXITS)))
def test_fail_closed_leetcode(scorer, bench, prog):
    lc, _ = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]
    r = scorer.evaluate(_py(prog), pushes["test"])
    assert r.score == 0.0 and r.passed == 0, r
    forged = "done" in prog  # a forged "done" line may turn 'crash' into 'wrong', never into a pass
    assert r.status == code.CRASH or (forged and r.status == code.WRONG), r


def test_fail_closed_livecodebench(scorer, bench):
    _, lcb = bench
    stdin_row = _lcb_row(lcb, "Which element in A is the second largest?")
    fn_row = _lcb_row(lcb, "def shortestDistanceAfterQueries")
    for prog in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise RuntimeError('x')\n",
                 "print('3')\nraise SystemExit(1)\n"):
        assert scorer.score(_py(prog), stdin_row["tests"]) == 0.0, prog
        assert scorer.score(_py(prog + SHORTEST_OK), fn_row) == 0.0, prog


# --------------------------------------------------------------------------------------------------------
# Hostile programs
# --------------------------------------------------------------------------------------------------------


def _contained(scorer, tests, prog, statuses, max_s=TIMEOUT + SLACK):
    t0 = time.monotonic()
    r = scorer.evaluate(_py(prog), tests)
    took = time.monotonic() - t0
    assert r.score == 0.0, r
    assert r.status in statuses, r
    assert took < max_s, f"took {took:.1f}s"
    assert not _wait_no_procs(scorer.uids), "a sandboxed process survived the call"
    return r


def test_infinite_loop_and_sleep(scorer, bench):
    lc, lcb = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    stdin = _lcb_row(lcb, "Which element in A is the second largest?")["tests"]
    _contained(scorer, pushes, "while True:\n    pass\n", {code.TIMEOUT})
    _contained(scorer, pushes, "class Solution:\n    def minimumPushes(self, word):\n        while True: pass\n",
               {code.TIMEOUT})
    _contained(scorer, stdin, "import time\ntime.sleep(100)\n", {code.TIMEOUT})
    # a program that ignores SIGALRM and sleeps in C
    _contained(scorer, pushes, "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                               "time.sleep(100)\n", {code.TIMEOUT})


FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(1000)
    os._exit(0)
print("bye")
"""


def test_fork_bomb_and_daemons(scorer, bench):
    lc, lcb = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    stdin = _lcb_row(lcb, "Which element in A is the second largest?")["tests"]
    _contained(scorer, pushes, FORK_BOMB, {code.TIMEOUT, code.CRASH})
    _contained(scorer, stdin, FORK_BOMB, {code.TIMEOUT, code.CRASH})
    _contained(scorer, stdin, DAEMON, {code.WRONG})
    _contained(scorer, pushes, DAEMON, {code.CRASH})
    # the host can still start processes
    assert subprocess.run(["true"]).returncode == 0


def test_memory_hog(scorer, bench):
    lc, lcb = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    stdin = _lcb_row(lcb, "Which element in A is the second largest?")["tests"]
    hog = "a = []\nwhile True:\n    a.append(bytearray(32 << 20))\n"
    _contained(scorer, pushes, hog, {code.CRASH})
    _contained(scorer, stdin, hog, {code.CRASH})
    _contained(scorer, pushes, "x = bytearray(8 << 30)\n", {code.CRASH})


MEMFD_HOG = """
import os, sys
fds = []
for i in range(60):  # 960 MiB of anonymous files: not address space, so RLIMIT_AS alone misses it
    fd = os.memfd_create("x")
    os.write(fd, b"a" * (16 << 20))
    fds.append(fd)
    sys.__stdout__.write("16 MiB\\n")
    sys.__stdout__.flush()
"""

FORKED_HOGS = """
import os, sys, time
for i in range(10):  # 11 processes x 200 MiB, each under its RLIMIT_AS
    if os.fork() == 0:
        break
a = bytearray(200 << 20)
for j in range(0, len(a), 4096):
    a[j] = 1
sys.__stdout__.write("200 MiB\\n")
sys.__stdout__.flush()
time.sleep(1.5)
"""


def test_total_memory_capped_by_cgroup(scorer, raw, bench):
    if not scorer.sandbox.memory_cgroup:
        msg = "no per-slot memory cgroup on this machine: total memory is capped per process only"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(msg)
        pytest.skip(msg)
    limit_mib = 2 * 256  # the scorer's cgroup limit (2 x memory_mb)
    r = raw(MEMFD_HOG)
    assert 16 * r.stdout.count(b"MiB") <= limit_mib, r.stdout
    r = raw(FORKED_HOGS)
    assert 200 * r.stdout.count(b"MiB") <= limit_mib + 400, r.stdout  # some may finish before others start
    lc, lcb = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    stdin = _lcb_row(lcb, "Which element in A is the second largest?")["tests"]
    _contained(scorer, pushes, MEMFD_HOG, {code.CRASH})
    _contained(scorer, stdin, MEMFD_HOG, {code.CRASH})
    _contained(scorer, pushes, FORKED_HOGS, {code.CRASH, code.TIMEOUT})
    # and the slot works normally afterwards
    assert scorer.score(_py(SECOND_LARGEST_OK), stdin) == 1.0


def test_huge_output(scorer, bench):
    lc, lcb = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    stdin = _lcb_row(lcb, "Which element in A is the second largest?")["tests"]
    r = _contained(scorer, stdin, "while True:\n    print('x' * 100000)\n", {code.OUTPUT_LIMIT, code.TIMEOUT})
    assert len(repr(r)) < 10_000
    # write to every descriptor (the result channel included), forever
    spam = "import os\nwhile True:\n    for fd in range(64):\n        try:\n            os.write(fd, b'y' * 65536)\n" \
           "        except OSError:\n            pass\n"
    r = _contained(scorer, pushes, spam, {code.OUTPUT_LIMIT, code.TIMEOUT})
    assert len(repr(r)) < 10_000
    # stderr is not read beyond a small tail either
    _contained(scorer, stdin, "import sys\nwhile True:\n    sys.stderr.write('z' * 100000)\n", {code.TIMEOUT})


def test_writes_stay_inside(scorer, raw, tmp_path, bench):
    tag = secrets.token_hex(8)
    targets = [f"/tmp/repirl_pwned_{tag}", str(tmp_path / "pwned"), f"/root/repirl_pwned_{tag}",
               f"/etc/repirl_pwned_{tag}", f"/usr/repirl_pwned_{tag}", f"/repirl_pwned_{tag}",
               os.path.join(REPO, f"repirl_pwned_{tag}"), f"/var/tmp/repirl_pwned_{tag}"]
    prog = (
        "import os, json, sys\nres = {}\n"
        f"for p in {targets!r}:\n"
        "    try:\n        os.makedirs(os.path.dirname(p), exist_ok=True)\n"
        "        open(p, 'w').write('pwned')\n        res[p] = 'written'\n"
        "    except OSError as e:\n        res[p] = repr(e)\n"
        "sys.__stdout__.write(json.dumps(res))\n"
    )
    r = raw(prog)
    inside = json.loads(r.stdout)
    # Only the sandbox's own /tmp (a private tmpfs) is writable: a target under /tmp (also the checkout's own
    # path when the clone lives under /tmp) may be written inside, into that tmpfs; the host must not see it.
    in_private_tmp = {p for p in targets if os.path.normpath(p).startswith("/tmp/")}
    assert {p for p, v in inside.items() if v == "written"} <= in_private_tmp, inside
    assert inside[f"/etc/repirl_pwned_{tag}"] != "written" and inside[f"/repirl_pwned_{tag}"] != "written"
    for p in targets:
        assert not os.path.exists(p), p
    lc, _ = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    _contained(scorer, pushes, prog.replace("sys.__stdout__.write(json.dumps(res))", ""), {code.CRASH})
    for p in targets:
        assert not os.path.exists(p), p


def test_host_files_and_env_not_readable(scorer, raw, tmp_path, monkeypatch, bench):
    secret = "s3cr3t-" + secrets.token_hex(16)
    monkeypatch.setenv("REPIRL_TEST_SECRET", secret)
    host_file = tmp_path / "secret.txt"
    host_file.write_text(secret)
    paths = ["/etc/shadow", "/etc/passwd", "/etc/hostname", str(host_file), "/proc/1/environ",
             "/proc/self/environ", f"/proc/{os.getpid()}/environ", "/root/.bashrc",
             os.path.join(REPO, "repirl_jax", "rewards", "code.py")]
    prog = (
        "import os, json, sys, glob\nres = {'env': dict(os.environ)}\n"
        f"for p in {paths!r}:\n"
        "    try:\n        res[p] = open(p, 'rb').read().decode('latin-1')\n"
        "    except OSError as e:\n        res[p] = repr(e)\n"
        "res['ls /'] = sorted(os.listdir('/'))\n"
        "res['procs'] = sorted(glob.glob('/proc/[0-9]*'))\n"
        "sys.__stdout__.write(json.dumps(res))\n"
    )
    r = raw(prog)
    assert secret.encode() not in r.stdout + r.stderr_tail
    seen = json.loads(r.stdout)
    assert "REPIRL_TEST_SECRET" not in seen["env"] and set(seen["env"]) <= {"PATH", "HOME", "LANG", "PWD"}
    for p in paths[:4] + paths[7:]:
        assert seen[p].startswith(("FileNotFoundError", "PermissionError")), (p, seen[p][:200])
    assert seen["ls /"] == sorted(["bin", "dev", "lib", "lib64", "proc", "sbin", "tmp", "usr"]
                                  + [d for d in ("lib32", "libx32") if d in seen["ls /"]])
    assert len(seen["procs"]) <= 3  # only the sandbox's own PID namespace is visible
    lc, _ = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    res = scorer.evaluate(_py(prog.replace("sys.__stdout__", "sys.stdout")), pushes)
    assert res.score == 0.0 and secret not in repr(res)


def test_no_network(scorer, raw, bench):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    try:
        prog = (
            "import socket, sys, json\nres = {}\n"
            "for host in ('127.0.0.1', 'localhost', '0.0.0.0'):\n"
            "    try:\n"
            f"        s = socket.create_connection((host, {port}), timeout=1)\n"
            "        s.sendall(b'pwned')\n        res[host] = 'connected'\n"
            "    except OSError as e:\n        res[host] = repr(e)\n"
            "sys.__stdout__.write(json.dumps(res))\n"
        )
        r = raw(prog)
        seen = json.loads(r.stdout)
        assert "connected" not in seen.values(), seen
        lc, _ = bench
        pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
        _contained(scorer, pushes, prog, {code.CRASH})
        srv.settimeout(0.3)
        with pytest.raises(socket.timeout):
            conn, _ = srv.accept()
            conn.close()
    finally:
        srv.close()


def test_cannot_kill_parent_or_host(scorer, raw, bench):
    victim = subprocess.Popen(["sleep", "60"])  # a host process (root) that must survive
    try:
        me = os.getpid()
        prog = (
            "import os, signal, subprocess, sys, json\nres = {}\n"
            f"for pid in (os.getppid(), 1, {me}, {victim.pid}, -1):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        res[pid] = 'sent'\n"
            "    except OSError as e:\n        res[pid] = repr(e)\n"
            "sys.__stdout__.write(json.dumps(res))\n"
        )
        raw(prog)
        lc, lcb = bench
        pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
        stdin = _lcb_row(lcb, "Which element in A is the second largest?")["tests"]
        _contained(scorer, pushes, prog, {code.CRASH})
        _contained(scorer, stdin, prog, {code.CRASH, code.WRONG})
        _contained(scorer, stdin, "import subprocess\nsubprocess.run(['kill', '-9', '-1'])\n"
                                  "subprocess.run(['kill', '-9', '1'])\n", {code.CRASH, code.WRONG})
        assert victim.poll() is None, "a host process was killed"
        # and the scorer still works afterwards
        row = _lcb_row(lcb, "Which element in A is the second largest?")
        assert scorer.score(_py(SECOND_LARGEST_OK), row["tests"]) == 1.0
    finally:
        victim.kill()
        victim.wait()


# --------------------------------------------------------------------------------------------------------
# Batches, unsandboxed mode, overhead
# --------------------------------------------------------------------------------------------------------


def test_batch_counts(scorer, bench):
    lc, lcb = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    stdin = _lcb_row(lcb, "Which element in A is the second largest?")["tests"]
    fn = _lcb_row(lcb, "def shortestDistanceAfterQueries")
    responses = [_py(PUSHES_OK), _py(PUSHES_WRONG), "no code here", _py("while True: pass"),
                 _py(SECOND_LARGEST_OK), _py("raise ValueError"), _py(SHORTEST_OK), _py(FORK_BOMB)]
    tests = [pushes, pushes, pushes, pushes, stdin, stdin, fn, pushes]
    t0 = time.monotonic()
    res = scorer.score_batch(responses, tests)
    took = time.monotonic() - t0
    assert res.scores[0] == 1.0 and 0 < res.scores[1] < 1 and res.scores[4] == 1.0 and res.scores[6] == 1.0, \
        [(r.status, round(r.elapsed_s, 2), r.details[:2]) for r in res.items]
    assert res.scores[2] == res.scores[3] == res.scores[5] == res.scores[7] == 0.0
    st = res.stats
    assert (st.n, st.n_passed, st.n_wrong, st.n_no_code) == (8, 3, 1, 1)
    assert st.n_timeout + st.n_crash == 3 and st.n_timeout >= 1 and st.n_crash >= 1
    assert res.counts[code.NO_CODE] == 1
    assert took < 2 * (TIMEOUT + SLACK)  # two slots in parallel
    assert not _wait_no_procs(scorer.uids)


def test_test_splitting_is_safe_from_several_threads():
    """score_batch's workers split assert tests at the same time. A GC callback that gives up the GIL makes a
    thread switch land inside AST construction; on CPython 3.11 (gh-106905) that raised "AST constructor
    recursion depth mismatch" for 2-3 of 80 calls (seen in CI-like runs as a correct program's sandbox_error)."""
    import gc
    import threading

    src = "x = 1\n" + "".join(f"assert f({i}) == {i}\n" for i in range(200))
    want = code._assert_steps(src)
    errors, wrong = [], []

    def give_up_the_gil(phase, info):
        if phase == "start":
            time.sleep(0.0005)

    def work():
        for _ in range(20):
            try:
                if code._assert_steps(src) != want:
                    wrong.append(1)
            except SystemError as e:
                errors.append(repr(e))

    threshold = gc.get_threshold()
    gc.set_threshold(200)
    gc.callbacks.append(give_up_the_gil)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.callbacks.remove(give_up_the_gil)
        gc.set_threshold(*threshold)
    assert not errors and not wrong, (errors[:2], len(wrong))
    assert len(want[0]) == 201 and want[1][0] == ("value", code.encode(0))


def test_start_up_is_not_charged_to_the_job(scorer, tmp_path, bench):  # `scorer`: skips here, fails in CI
    """A machine that stalls while bwrap and the interpreter start (2 loaded cores in CI once cost a correct
    program its whole 3 s) must not fail the program: the job's clock starts when its code does. Start-up has
    its own limit, and hitting that is a sandbox error, not the program's timeout."""
    lc, _ = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    stall = 2.5
    slow = tmp_path / "stalling-bwrap"
    slow.write_text(f'#!/bin/sh\n/bin/sleep {stall}\nexec {shutil.which("bwrap")} "$@"\n')
    slow.chmod(0o755)
    cfg = SandboxConfig(bwrap=str(slow))
    with code.CodeScorer(1, config=cfg, timeout_s=1.0) as sc:
        r = sc.evaluate(_py(PUSHES_OK), pushes)
        assert (r.status, r.score) == (code.PASSED, 1.0), r
        assert r.elapsed_s > stall  # the stall happened, and the 1 s limit did not count it
        t0 = time.monotonic()
        r = sc.evaluate(_py("while True:\n    pass\n"), pushes)
        assert r.status == code.TIMEOUT, r
        assert time.monotonic() - t0 < stall + 1.0 + SLACK  # the job's own limit still holds
    run = Sandbox(dataclasses.replace(cfg, startup_timeout_s=1.0)).run("print(1)", timeout_s=1.0)
    assert run.timed_out and not run.started and run.stdout == b"", run
    r = code._judge(code._build_spec("print(1)", pushes, None, None, 1.0, 1 << 20), run, False)
    assert r.status == code.SANDBOX_ERROR and "start-up timed out" in r.details[0], r


def test_refuses_unsandboxed_unless_allowed(bench):
    lc, _ = bench
    pushes = lc["weekly-contest-381-minimum-number-of-pushes-to-type-word-i"]["test"]
    broken = SandboxConfig(bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailableError):
        code.CodeScorer(1, config=broken)
    with pytest.raises(SandboxUnavailableError):
        Sandbox(broken)
    with pytest.warns(RuntimeWarning, match="UNSANDBOXED"):
        sc = code.CodeScorer(1, config=broken, allow_unsandboxed=True)
    with sc:
        assert sc.backend == "unsandboxed"
        assert sc.score(_py(PUSHES_OK), pushes) == 1.0  # benign code only: nothing is contained here
        assert sc.score(_py(PUSHES_WRONG), pushes) < 1.0


def test_per_call_overhead(scorer, bench):
    _, lcb = bench
    row = _lcb_row(lcb, "Which element in A is the second largest?")
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        assert scorer.score(_py("print(1)"), [{"input": "", "output": "1", "testtype": "stdin"}]) == 1.0
        times.append(time.monotonic() - t0)
    times.sort()
    print(f"\nper-call overhead (benign stdin program, 1 test): median {1000 * times[2]:.0f} ms")
    assert times[2] < 1.0
    assert scorer.score(_py(SECOND_LARGEST_OK), row["tests"]) == 1.0
