"""Run one command as N local processes of a jax.distributed job (multi-host testing on one machine).

    python tools/local_cluster.py --processes=2 --devices_per_process=4 --logdir=/tmp/logs -- \
        python -m repirl_jax.launch --config=configs/demo.py --workdir=/tmp/run --config.mesh.devices=0

Each process gets REPIRL_COORDINATOR=127.0.0.1:PORT, REPIRL_NUM_PROCESSES, REPIRL_PROCESS_ID, JAX on the
CPU with `devices_per_process` simulated devices, and its output in LOGDIR/process_<i>.log. If a process
fails, the others get `--grace` seconds to stop on their own (jax.distributed stops them once it notices)
and are then killed. Exit code: the first non-zero exit code, or 0.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str], processes: int, devices_per_process: int, logdir: str, grace: float = 60.0,
        env: dict | None = None, timeout: float | None = None) -> tuple[int, list[int]]:
    """Start the processes, wait for them; returns (exit code, per-process exit codes)."""
    os.makedirs(logdir, exist_ok=True)
    port = free_port()
    procs = []
    for i in range(processes):
        e = dict(os.environ if env is None else env)
        e.update(REPIRL_COORDINATOR=f"127.0.0.1:{port}", REPIRL_NUM_PROCESSES=str(processes),
                 REPIRL_PROCESS_ID=str(i), JAX_PLATFORMS="cpu",
                 XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
        log = open(os.path.join(logdir, f"process_{i}.log"), "w")
        procs.append((subprocess.Popen(command, env=e, stdout=log, stderr=subprocess.STDOUT), log))
    start, failed_at = time.time(), None
    while any(p.poll() is None for p, _ in procs):
        if failed_at is None and any(p.returncode not in (None, 0) for p, _ in procs):
            failed_at = time.time()
        late = failed_at is not None and time.time() - failed_at > grace
        if late or (timeout is not None and time.time() - start > timeout):
            for p, _ in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    for _, log in procs:
        log.close()
    codes = [p.returncode for p, _ in procs]
    return next((c for c in codes if c != 0), 0), codes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--devices_per_process", type=int, default=4)
    ap.add_argument("--logdir", default="local_cluster_logs")
    ap.add_argument("--grace", type=float, default=60.0)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("no command after --")
    rc, codes = run(command, a.processes, a.devices_per_process, a.logdir, a.grace)
    print(f"exit codes per process: {codes}; logs in {a.logdir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
