"""Run untrusted Python (written by a model during training) in an isolated, resource-limited sandbox.

Isolation design (backend ``"bwrap"``; needs root, bubblewrap and util-linux's ``setpriv``; install with
``bash tools/setup_sandbox.sh``)::

    bwrap  --unshare-pid --unshare-net --unshare-ipc --unshare-uts --unshare-cgroup-try
           --die-with-parent --new-session --clearenv
           --ro-bind /usr /usr  (+ /bin /lib /lib64 /sbin symlinks into /usr; /usr/local masked)
           --proc /proc --dev /dev --tmpfs /tmp (size-capped, the only writable place)
      setpriv --reuid U --regid U --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all
        /usr/bin/python3 -I -B -c BOOTSTRAP      (reads its job from stdin, sets rlimits, runs it)

* Filesystem: a fresh tmpfs root with only ``/usr`` (read-only) and a private, size-capped ``/tmp``;
  no ``/etc``, ``/home``, ``/root``, ``/work`` or host ``/tmp``. Writes elsewhere fail (read-only or
  root-owned), writes to ``/tmp`` land in the sandbox's own tmpfs and vanish with it.
* Network: a new network namespace with nothing but its own loopback: no host service is reachable, the
  host's loopback included (abstract unix sockets are per network namespace too).
* Processes: a new PID namespace. When the job's main process exits (or the host kills ``bwrap`` at the
  wall-clock deadline, or the host process dies: ``--die-with-parent``) the namespace's init exits and the
  kernel SIGKILLs every process left in it, so nothing survives a call. Inside, the job sees only its own
  processes, and its parent (the namespace's init) is root-owned, so it cannot signal anything outside.
* Privileges: the job runs under a real, unprivileged uid/gid ``U`` (no user namespace: the uid is the
  host's own, so the kernel's per-uid process limit binds it), with no capabilities, no supplementary
  groups and ``no_new_privs`` (setuid binaries in /usr do nothing).
* Limits (setrlimit, soft = hard): address space, CPU seconds, processes+threads of uid ``U``
  (RLIMIT_NPROC counts every process of a uid machine-wide, so each parallel slot has its *own* uid: see
  :class:`UidLease`), file size, open files, no core dumps; plus a wall-clock deadline enforced by the host:
  ``timeout_s`` from the moment the job's own code starts (the bootstrap says so on stderr, before any
  untrusted code runs), and ``startup_timeout_s`` for bwrap and the interpreter to get there. A machine
  that stalls during start-up (2 loaded cores) therefore costs the job none of its time.
* Total memory: where the machine allows it (cgroup v1 memory controller, or v2 with "memory" delegable),
  each uid/slot also gets a memory cgroup (default limit 2 x ``memory_mb``) that the job joins before
  bwrap starts. It caps what per-process RLIMIT_AS cannot: many processes each under the limit, tmpfs and
  memfd files. The kernel OOM-kills inside that cgroup only. Without it (``memory_cgroup="auto"`` falls
  back with a warning) the worst case is ``max_procs x memory_mb`` + the /tmp size + open memfds.
* Environment: cleared (only PATH, HOME=/tmp, LANG); the host's variables never reach the job.
* Output: the host reads the job's stdout/stderr while it runs and kills the job as soon as the stdout
  cap is exceeded (stderr keeps only a small tail), so output can never grow without bound.

Where this isolation is unavailable (not root, no bubblewrap, namespaces forbidden: some clusters),
:class:`Sandbox` refuses to run anything (:class:`SandboxUnavailableError`) unless it was created with
``allow_unsandboxed=True``; then it warns loudly and runs jobs as plain subprocesses with only rlimits, a
cleared environment, a throw-away working directory and a process-group kill at the deadline (no file,
network or process isolation: for trusted code only).

Per-call overhead of the bwrap backend (cgroup join + bwrap + setpriv + interpreter start-up) is ~25-50 ms
(median ~40 ms) on a 2-core machine; ``python -m repirl_jax.rewards.sandbox`` checks the sandbox and
measures it.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import fcntl
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from typing import Any

logger = logging.getLogger(__name__)

SETUP_HINT = "install it with: bash tools/setup_sandbox.sh (apt-get install bubblewrap), and run as root"

# Written to stderr by the bootstrap once start-up is over, just before the job's source runs: the host
# starts the job's clock when it reads it. Untrusted code can only write it later, after the real one.
_READY = b"\x00repirl-sandbox-ready\x00"

# Runs inside the sandbox, as the unprivileged uid, before any untrusted code: read the job (JSON) from
# stdin, apply the resource limits, point stdin at /dev/null, say "ready" and run the job's own source.
_BOOTSTRAP = r"""
import json, os, resource, sys
job = json.loads(sys.stdin.buffer.read())
for name, value in job["rlimits"].items():
    res = getattr(resource, name)
    soft, hard = resource.getrlimit(res)
    if hard != resource.RLIM_INFINITY and (value == resource.RLIM_INFINITY or value > hard):
        value = hard
    resource.setrlimit(res, (value, value))
fd = os.open("/dev/null", os.O_RDONLY)
os.dup2(fd, 0)
os.close(fd)
os.umask(0o077)
os.write(2, %r)
exec(compile(job["source"], "<sandbox-job>", "exec"), {"__name__": "__sandbox_job__", "JOB": job["data"]})
""" % (_READY,)


class SandboxUnavailableError(RuntimeError):
    """The sandbox cannot run here and unsandboxed execution was not explicitly allowed."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and locations of the sandbox. All limits apply per call (one job)."""

    timeout_s: float = 10.0           # wall-clock limit of the job, from when its code starts (host-enforced)
    startup_timeout_s: float = 30.0   # wall-clock limit of bwrap + interpreter start-up, before that
    memory_mb: int = 1024             # RLIMIT_AS of each process in the job
    max_procs: int = 16               # RLIMIT_NPROC of the slot's uid (processes + threads)
    max_output_bytes: int = 8 << 20   # cap on the job's stdout (result channel); exceeding it kills the job
    tmp_size_mb: int = 64             # size of the job's private /tmp (tmpfs)
    max_file_mb: int = 32             # RLIMIT_FSIZE
    max_open_files: int = 256         # RLIMIT_NOFILE
    python: str = "/usr/bin/python3"  # interpreter inside the sandbox (must live under /usr)
    bwrap: str = "bwrap"
    setpriv: str = "setpriv"
    uid_base: int = int(os.environ.get("REPIRL_SANDBOX_UID_BASE", "900000000"))
    uid_span: int = 4096              # uids uid_base .. uid_base+uid_span-1 may be leased to slots
    lock_dir: str = os.environ.get(
        "REPIRL_SANDBOX_LOCK_DIR", os.path.join(tempfile.gettempdir(), "repirl-sandbox-uids"))
    allow_unsandboxed: bool = False
    # Memory cgroup per uid/slot (caps the job's *total* memory incl. tmpfs/memfd/page cache, which per-process
    # RLIMIT_AS does not): "auto" = use one if this machine lets us create it, "require", or "off".
    memory_cgroup: str = "auto"
    cgroup_memory_mb: int | None = None   # limit of that cgroup; default 2 * memory_mb


class SandboxError(RuntimeError):
    """The sandbox machinery itself failed (not the job)."""


@dataclasses.dataclass
class RunResult:
    """What the host saw of one job."""

    stdout: bytes
    stderr_tail: bytes
    returncode: int | None
    timed_out: bool
    output_exceeded: bool
    elapsed_s: float
    backend: str
    started: bool = True   # the job's code began (False: start-up failed or hit ``startup_timeout_s``)


# --------------------------------------------------------------------------------------------------------
# uid leases: one real uid per parallel slot, exclusive across threads and processes (flock)
# --------------------------------------------------------------------------------------------------------


class UidLease:
    """An exclusive lease on one uid of ``[uid_base, uid_base + uid_span)``, held with ``flock`` on a file
    in ``lock_dir`` so that two scorers (threads or processes on one machine) never share a uid (they would
    share its process limit). Released by :meth:`release` or when the process exits."""

    _local_lock = threading.Lock()
    _held: set[int] = set()

    def __init__(self, cfg: SandboxConfig):
        os.makedirs(cfg.lock_dir, mode=0o700, exist_ok=True)
        self.uid = -1
        self._fd = -1
        with UidLease._local_lock:
            for uid in range(cfg.uid_base, cfg.uid_base + cfg.uid_span):
                if uid in UidLease._held:
                    continue
                fd = os.open(os.path.join(cfg.lock_dir, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self.uid, self._fd = uid, fd
                UidLease._held.add(uid)
                return
        raise SandboxUnavailableError(f"no free sandbox uid in [{cfg.uid_base}, {cfg.uid_base + cfg.uid_span})")

    def release(self) -> None:
        with UidLease._local_lock:
            if self._fd >= 0:
                os.close(self._fd)
                UidLease._held.discard(self.uid)
                self._fd = -1

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------------------
# Memory cgroups (best effort: cgroup v1 memory controller, or v2 where our cgroup may delegate "memory")
# --------------------------------------------------------------------------------------------------------

_cg_lock = threading.Lock()
_cg_root: list = []  # [(version, dir) | None], computed once


def _memory_cgroup_root() -> tuple[str, str] | None:
    with _cg_lock:
        if not _cg_root:
            _cg_root.append(_find_memory_cgroup_root())
        return _cg_root[0]


def _find_memory_cgroup_root() -> tuple[str, str] | None:
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v2_path = None
    for line in lines:
        hid, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            d = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
            if os.path.isfile(os.path.join(d, "memory.limit_in_bytes")):
                return "v1", d
        if hid == "0":
            v2_path = path
    if v2_path is not None and os.path.isfile("/sys/fs/cgroup/cgroup.controllers"):
        d = os.path.join("/sys/fs/cgroup", v2_path.lstrip("/"))
        try:
            with open(os.path.join(d, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
            if "memory" not in enabled:
                with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write("+memory")
            return "v2", d
        except OSError:
            return None
    return None


def _slot_cgroup(uid: int, limit_bytes: int) -> str:
    """Create (or reuse) the memory cgroup of one uid; returns its ``cgroup.procs`` path. Raises OSError."""
    root = _memory_cgroup_root()
    if root is None:
        raise OSError("no writable memory cgroup")
    version, base = root
    d = os.path.join(base, f"repirl-sandbox-{uid}")
    if not os.path.isdir(d):
        os.mkdir(d)
        with _cg_lock:
            _created_cgroups.add(d)
    files = ([("memory.limit_in_bytes", limit_bytes), ("memory.memsw.limit_in_bytes", limit_bytes)]
             if version == "v1" else [("memory.max", limit_bytes), ("memory.swap.max", 0)])
    files = [(os.path.join(d, name), value) for name, value in files if os.path.exists(os.path.join(d, name))]
    # (v1: memsw must stay >= limit, so the order of the two writes depends on the old values)
    for order in (files, files[::-1]):
        try:
            for path, value in order:
                with open(path, "w") as f:
                    f.write(str(value))
            break
        except OSError:
            if order is not files:
                raise
    return os.path.join(d, "cgroup.procs")


_created_cgroups: set[str] = set()


@atexit.register
def _remove_cgroups() -> None:
    for d in list(_created_cgroups):
        try:
            os.rmdir(d)  # only succeeds once empty, which it is after every job
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------------------

_probe_cache: dict[tuple, tuple[bool, str]] = {}
_probe_lock = threading.Lock()


def _which(prog: str) -> str | None:
    if os.path.isabs(prog):
        return prog if os.access(prog, os.X_OK) else None
    return shutil.which(prog, path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin:/bin:/sbin")


def sandbox_status(cfg: SandboxConfig | None = None) -> tuple[bool, str]:
    """(available, reason) for the bwrap backend with this config; probes once (runs a tiny job)."""
    cfg = cfg or SandboxConfig()
    key = (cfg.bwrap, cfg.setpriv, cfg.python)
    with _probe_lock:
        if key not in _probe_cache:
            _probe_cache[key] = _probe(cfg)
        return _probe_cache[key]


def sandbox_available(cfg: SandboxConfig | None = None) -> bool:
    return sandbox_status(cfg)[0]


def _probe(cfg: SandboxConfig) -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "the sandbox drops to a dedicated unprivileged uid, which needs root"
    if _which(cfg.bwrap) is None:
        return False, f"bubblewrap ({cfg.bwrap}) not found; {SETUP_HINT}"
    if _which(cfg.setpriv) is None:
        return False, f"setpriv ({cfg.setpriv}, util-linux) not found; {SETUP_HINT}"
    py = os.path.realpath(cfg.python)
    if not (py.startswith("/usr/") and os.access(py, os.X_OK)):
        return False, f"sandbox interpreter {cfg.python} missing or not under /usr (apt-get install python3)"
    lease = UidLease(cfg)
    try:
        src = "import json, os, sys\nsys.__stdout__.write(json.dumps([os.getuid(), os.getgid(), os.getpid()]))\n"
        probe_cfg = dataclasses.replace(cfg, timeout_s=15.0, startup_timeout_s=30.0)
        res = Sandbox(probe_cfg, _skip_probe=True)._run_bwrap(src, None, lease.uid, 15.0)
    except Exception as e:  # noqa: BLE001
        return False, f"probe failed: {e!r}"
    finally:
        lease.release()
    try:
        got = json.loads(res.stdout.decode())
    except Exception:  # noqa: BLE001
        return False, f"probe failed (rc={res.returncode}): {res.stderr_tail.decode(errors='replace')[-500:]}"
    if got[:2] != [lease.uid, lease.uid]:
        return False, f"probe ran as uid/gid {got[:2]}, expected {lease.uid}"
    if got[2] > 10:
        return False, f"probe pid {got[2]}: no PID namespace"
    return True, "ok"


# --------------------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------------------

def _feed(proc: subprocess.Popen, payload: bytes) -> None:
    """Write the job to its stdin and close it. The bootstrap reads all of stdin before any untrusted code
    runs, so the blocking write cannot deadlock."""
    try:
        proc.stdin.write(payload)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


class _Collected:
    """What one job wrote, as the host reads it: stdout up to ``cap`` bytes, a tail of stderr, and whether the
    bootstrap's ``_READY`` marker (the start of the job's clock) has come by."""

    def __init__(self, cap: int):
        self.cap = cap
        self.out = bytearray()
        self.err = bytearray()
        self.early = bytearray()  # stderr before _READY (bwrap's own complaints, if any)
        self.started = self.exceeded = False

    def stdout(self, chunk: bytes) -> None:
        room = self.cap - len(self.out)
        self.out += chunk[:room]
        self.exceeded |= len(chunk) > room

    def stderr(self, chunk: bytes) -> bool:
        """Keep ``chunk``; True when it completes the ``_READY`` marker."""
        just_started = False
        if not self.started:
            self.early += chunk
            at = self.early.find(_READY)
            if at < 0:
                del self.early[: max(0, len(self.early) - 8192)]
                return False
            chunk = bytes(self.early[:at] + self.early[at + len(_READY):])
            self.early.clear()
            self.started = just_started = True
        self.err += chunk
        if len(self.err) > 8192:
            del self.err[: len(self.err) - 4096]
        return just_started

    def stderr_tail(self) -> bytes:
        return bytes((self.err + self.early)[-4096:])


class Sandbox:
    """Runs jobs: a Python source (run inside the sandbox with a global ``JOB`` = ``data``), whose stdout is
    returned to the host (capped). Thread-safe; each concurrent caller must pass its own uid (see
    :class:`UidLease`), or use :meth:`run` without one to lease a uid for the call.

    Raises :class:`SandboxUnavailableError` on creation if the bwrap backend is unavailable and
    ``cfg.allow_unsandboxed`` is false.
    """

    def __init__(self, cfg: SandboxConfig | None = None, *, _skip_probe: bool = False):
        self.cfg = cfg or SandboxConfig()
        self.backend = "bwrap"
        self.memory_cgroup = False       # whether jobs run in a per-uid memory cgroup
        self._cgroups: dict[int, str] = {}
        self._cg_lock = threading.Lock()
        if _skip_probe:
            return
        ok, reason = sandbox_status(self.cfg)
        if ok:
            self._setup_cgroups()
            return
        if not self.cfg.allow_unsandboxed:
            raise SandboxUnavailableError(
                f"code sandbox unavailable: {reason}. Refusing to run untrusted code unsandboxed; pass "
                f"allow_unsandboxed=True to run it anyway (NOT isolated)."
            )
        self.backend = "unsandboxed"
        msg = (f"!!! CODE SANDBOX UNAVAILABLE ({reason}): running model-written code UNSANDBOXED "
               f"(rlimits + timeout only; no filesystem, network or process isolation) because "
               f"allow_unsandboxed=True !!!")
        logger.error(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)

    # -- public -------------------------------------------------------------------------------------------

    def run(self, source: str, data: Any = None, *, uid: int | None = None,
            timeout_s: float | None = None) -> RunResult:
        timeout_s = self.cfg.timeout_s if timeout_s is None else timeout_s
        if self.backend == "unsandboxed":
            return self._run_unsandboxed(source, data, timeout_s)
        if uid is not None:
            return self._run_bwrap(source, data, uid, timeout_s)
        lease = UidLease(self.cfg)
        try:
            return self._run_bwrap(source, data, lease.uid, timeout_s)
        finally:
            lease.release()

    # -- internals ----------------------------------------------------------------------------------------

    def _cgroup_limit(self) -> int:
        return (self.cfg.cgroup_memory_mb or 2 * self.cfg.memory_mb) << 20

    def _setup_cgroups(self) -> None:
        mode = self.cfg.memory_cgroup
        if mode == "off":
            return
        if mode not in ("auto", "require"):
            raise ValueError(f"memory_cgroup must be 'auto', 'require' or 'off', not {mode!r}")
        lease = UidLease(self.cfg)
        try:
            procs = _slot_cgroup(lease.uid, self._cgroup_limit())
            self.memory_cgroup = True
            self._cgroups[lease.uid] = procs
            res = self._run_bwrap("import sys; sys.__stdout__.write(open('/proc/self/cgroup').read())", None,
                                  lease.uid, 15.0)
            if res.returncode != 0:
                raise OSError(f"job in cgroup failed (rc={res.returncode}): {res.stderr_tail[-300:]!r}")
        except OSError as e:
            self.memory_cgroup = False
            self._cgroups.clear()
            if mode == "require":
                raise SandboxUnavailableError(f"memory cgroup required but unavailable: {e}") from e
            logger.warning("code sandbox: no per-slot memory cgroup (%s); memory is limited per process only "
                           "(RLIMIT_AS x max_procs)", e)
        finally:
            lease.release()

    def _cgroup_procs(self, uid: int) -> str | None:
        if not self.memory_cgroup:
            return None
        with self._cg_lock:
            if uid not in self._cgroups:
                try:
                    self._cgroups[uid] = _slot_cgroup(uid, self._cgroup_limit())
                except OSError as e:
                    raise SandboxError(f"cannot set up the memory cgroup of uid {uid}: {e}") from e
            return self._cgroups[uid]

    def _rlimits(self, timeout_s: float) -> dict[str, int]:
        c = self.cfg
        cpu = max(1, int(timeout_s + 1.999))
        return {
            "RLIMIT_AS": c.memory_mb << 20,
            "RLIMIT_CPU": cpu,
            "RLIMIT_NPROC": c.max_procs,
            "RLIMIT_FSIZE": c.max_file_mb << 20,
            "RLIMIT_NOFILE": c.max_open_files,
            "RLIMIT_CORE": 0,
            "RLIMIT_MEMLOCK": 0,
            "RLIMIT_MSGQUEUE": 0,
        }

    def _payload(self, source: str, data: Any, timeout_s: float) -> bytes:
        return json.dumps({"rlimits": self._rlimits(timeout_s), "source": source, "data": data}).encode()

    def _bwrap_argv(self, uid: int) -> list[str]:
        c = self.cfg
        py = os.path.realpath(c.python)
        argv = [
            _which(c.bwrap) or c.bwrap,
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox", "--die-with-parent", "--new-session",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8",
            "--ro-bind", "/usr", "/usr",
        ]
        if not py.startswith("/usr/local/"):
            argv += ["--tmpfs", "/usr/local"]
        for link in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
            if link in ("/bin", "/lib") or os.path.isdir("/usr" + link):
                argv += ["--symlink", "usr" + link, link]
        argv += [
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(c.tmp_size_mb << 20), "--tmpfs", "/tmp",
            "--chdir", "/tmp",
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
            "/usr/bin/setpriv" if os.path.exists("/usr/bin/setpriv") else (_which(c.setpriv) or c.setpriv),
            f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "--",
            py, "-I", "-B", "-c", _BOOTSTRAP,
        ]
        return argv

    def _run_bwrap(self, source: str, data: Any, uid: int, timeout_s: float) -> RunResult:
        if not (self.cfg.uid_base <= uid < self.cfg.uid_base + self.cfg.uid_span) or uid <= 0:
            raise ValueError(f"uid {uid} outside the sandbox uid range")
        argv = self._bwrap_argv(uid)
        procs = self._cgroup_procs(uid)
        if procs is not None:
            # join the slot's memory cgroup first, so that bwrap and everything it starts are in it
            argv = ["/bin/sh", "-c", 'echo $$ > "$0" || exit 125; exec "$@"', procs] + argv
        res = self._communicate(argv, self._payload(source, data, timeout_s), timeout_s, cwd="/", backend="bwrap")
        if procs is not None and res.returncode == 125 and not res.stdout:
            raise SandboxError(f"could not join memory cgroup {procs}: {res.stderr_tail[-300:]!r}")
        return res

    def _run_unsandboxed(self, source: str, data: Any, timeout_s: float) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="repirl-unsandboxed-") as d:
            argv = [os.path.realpath(self.cfg.python) if os.path.exists(self.cfg.python) else "python3",
                    "-I", "-B", "-c", _BOOTSTRAP]
            return self._communicate(argv, self._payload(source, data, timeout_s), timeout_s, cwd=d,
                                     backend="unsandboxed", env={"PATH": "/usr/bin:/bin", "HOME": d,
                                                                 "LANG": "C.UTF-8", "TMPDIR": d})

    def _communicate(self, argv: list[str], payload: bytes, timeout_s: float, *, cwd: str, backend: str,
                     env: dict[str, str] | None = None) -> RunResult:
        t0 = time.monotonic()
        # Start-up (bwrap, setpriv, interpreter) has its own limit; the job's clock starts at _READY.
        deadline = t0 + self.cfg.startup_timeout_s
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env or {}, cwd=cwd, close_fds=True, start_new_session=True)
        got = _Collected(self.cfg.max_output_bytes)
        timed_out = False
        sel = selectors.DefaultSelector()
        try:
            _feed(proc, payload)
            for f in (proc.stdout, proc.stderr):
                os.set_blocking(f.fileno(), False)
                sel.register(f, selectors.EVENT_READ)
            open_streams = 2
            while open_streams and not got.exceeded:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(min(left, 1.0)):
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                    elif key.fileobj is proc.stdout:
                        got.stdout(chunk)
                    elif got.stderr(chunk):  # the job's code starts now
                        deadline = time.monotonic() + timeout_s
            if not (timed_out or got.exceeded):
                try:
                    proc.wait(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            sel.close()
            self._kill(proc)
            for f in (proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        return RunResult(bytes(got.out), got.stderr_tail(), proc.returncode, timed_out, got.exceeded,
                         time.monotonic() - t0, backend, got.started)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        # bwrap's own process group; its namespace init dies with it (--die-with-parent + PID namespace).
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError as e:
                if e.errno != errno.ESRCH:
                    raise
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def _main() -> None:  # pragma: no cover - manual check
    ok, reason = sandbox_status()
    print(f"sandbox available: {ok} ({reason})")
    if not ok:
        raise SystemExit(1)
    sb = Sandbox()
    lease = UidLease(sb.cfg)
    times = []
    for _ in range(20):
        r = sb.run("import sys; sys.__stdout__.write('ok')", uid=lease.uid)
        assert r.stdout == b"ok", r
        times.append(r.elapsed_s)
    times.sort()
    print(f"per-call overhead (benign job): median {1000 * times[len(times) // 2]:.1f} ms, "
          f"min {1000 * times[0]:.1f} ms, max {1000 * times[-1]:.1f} ms")


if __name__ == "__main__":  # pragma: no cover
    _main()
