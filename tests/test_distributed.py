"""Scale-out: the same run on 1 device, on 8 devices under a (1, 4, 2) mesh, and as two jax.distributed
processes of 4 devices each; a dead process stops the job instead of hanging it."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from repirl_jax import launch
from repirl_jax.checkpoints import hf
from repirl_jax.config import load_config_file
from repirl_jax.runtime import distributed
from repirl_jax.training.metrics import read_metrics
from tools import local_cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Timing fields differ run to run; the sampler-vs-trainer log-prob gap is itself float rounding noise.
NOT_COMPARED = ("time_", "tokens_per_s", "logp_diff_sampler_vs_trainer")


def _assert_same_metrics(rows_a, rows_b, rtol=1e-4, atol=1e-5):
    """Equal iteration by iteration within rtol (atol for values that are near zero, e.g. a mean of
    process rewards that cancel, where float rounding is relatively large)."""
    assert [r["iteration"] for r in rows_a] == [r["iteration"] for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        keys = {k for k in a if not k.startswith(NOT_COMPARED)}
        assert keys == {k for k in b if not k.startswith(NOT_COMPARED)}
        bad = {k: (a[k], b[k]) for k in keys if not np.isclose(a[k], b[k], rtol=rtol, atol=atol)}
        assert not bad, f"iteration {a['iteration']}: {bad}"


def _demo_two_iterations():
    """configs/demo.py, two iterations, without the BC warm-up and with small evaluation sets."""
    c = load_config_file(os.path.join(REPO, "configs", "demo.py"))
    c.warmup_bc.steps = 0
    c.data.synthetic.update(n_train=256, n_val=32, n_test=32)
    c.data.val_limit = 32
    c.train.update(max_iterations=2, checkpoint_every=1, eval_every=1, eval_batch=32, async_checkpoint=False)
    return c


def test_demo_on_mesh_1_4_2_matches_one_device(tmp_path):
    c1 = _demo_two_iterations()
    launch.run(c1, str(tmp_path / "one"), progress_bar=False)
    c8 = _demo_two_iterations()
    c8.mesh.update(data=1, fsdp=4, tensor=2, devices=8)
    c8.rollout.weights = "replicated"  # the sampler's own weight copy: rollouts must not change
    trainer = launch.run(c8, str(tmp_path / "eight"), progress_bar=False).trainer
    # The run really is sharded: fsdp splits the embedding's hidden dim, tensor its vocabulary dim; the
    # sampler's copy is whole on every device and made on the devices.
    spec = trainer.state["policy"]["model"]["embed"].sharding.spec
    assert tuple(spec) == ("tensor", "fsdp"), spec
    copy = trainer.sampler_params(trainer.state["policy"]["model"])
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(copy))
    np.testing.assert_array_equal(np.asarray(copy["embed"]), np.asarray(trainer.state["policy"]["model"]["embed"]))
    _assert_same_metrics(read_metrics(str(tmp_path / "one")), read_metrics(str(tmp_path / "eight")))


def _tiny_flags(workdir, iterations=2):
    return [sys.executable, "-m", "repirl_jax.launch", f"--config={REPO}/tests/train_config.py",
            f"--workdir={workdir}", "--config.mesh.devices=0", "--config.mesh.data=1", "--config.mesh.fsdp=4",
            "--config.mesh.tensor=2", f"--config.train.max_iterations={iterations}"]


def _log_tail(path, n=3000):
    with open(path, errors="replace") as f:
        return f.read().replace("\r", "\n")[-n:]


def test_two_processes_match_one_process_of_eight_devices(tmp_path):
    from tests.train_config import tiny_config
    one = tmp_path / "one"
    c = tiny_config("repirl")
    c.mesh.update(data=1, fsdp=4, tensor=2, devices=0)
    launch.run(c, str(one), progress_bar=False)

    two = tmp_path / "two"
    rc, codes = local_cluster.run(_tiny_flags(two), processes=2, devices_per_process=4,
                                  logdir=str(tmp_path / "logs"), timeout=600)
    assert rc == 0, (codes, _log_tail(tmp_path / "logs" / "process_0.log"), _log_tail(tmp_path / "logs" / "process_1.log"))
    assert "process 1 of 2: 4 local devices, 8 in all" in _log_tail(tmp_path / "logs" / "process_1.log", 10**6)
    _assert_same_metrics(read_metrics(str(one)), read_metrics(str(two)))
    # Metrics and summaries come from process 0 alone: one line per iteration, no duplicates.
    assert [r["iteration"] for r in read_metrics(str(two))] == [1, 2]

    # The 2-process checkpoint (written collectively through orbax) restores in this single process, onto
    # 1 device, and matches the single-process run's parameters. Gloo and the in-process collectives sum in
    # different orders, and Adam turns a near-zero gradient entry whose rounding differs into a step of up
    # to ~lr, so a few entries may differ by up to 2 * lr per update; all others agree to 1e-4.
    updates = 2 * 2  # iterations x policy mini-batches (the PRM: one mini-batch per iteration)
    for which, lr, steps in (("prm", c.prm.lr, 2), ("policy", c.policy.lr, updates)):
        two_p, _, two_h, _ = hf.load_training_checkpoint(str(two), which=which)
        one_p, _, one_h, _ = hf.load_training_checkpoint(str(one), which=which)
        a = np.concatenate([np.ravel(x) for x in jax.tree.leaves((two_p, two_h))])
        b = np.concatenate([np.ravel(x) for x in jax.tree.leaves((one_p, one_h))])
        assert a.shape == b.shape and a.size > 1000
        off = ~np.isclose(a, b, rtol=1e-4, atol=1e-6)
        assert off.mean() < 1e-3, (which, off.sum(), a.size)
        assert np.abs(a - b).max() <= 2 * lr * steps, (which, np.abs(a - b).max())


def test_a_dead_process_stops_the_job(tmp_path):
    """SIGKILL one of two processes mid-run: the survivor exits with an error naming itself, promptly,
    and the checkpoints already written are intact."""
    work, logs = tmp_path / "run", tmp_path / "logs"
    env = dict(os.environ, REPIRL_HEARTBEAT_TIMEOUT_S="10")
    cmd = [sys.executable, os.path.join(REPO, "tools", "local_cluster.py"), "--processes=2",
           "--devices_per_process=4", f"--logdir={logs}", "--grace=120", "--"] + _tiny_flags(work, 500)
    cluster = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # wait until a few iterations (and checkpoints) are done
            if os.path.exists(work / "metrics.jsonl") and len(open(work / "metrics.jsonl").readlines()) >= 3:
                break
            assert cluster.poll() is None, cluster.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("the 2-process run made no progress in 300 s")
        victim = _pid_of_process(1)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        out, _ = cluster.communicate(timeout=120)
        stopped_after = time.time() - killed_at
    finally:
        if cluster.poll() is None:
            cluster.kill()
    assert cluster.returncode != 0 and "exit codes per process: [1, -9]" in out, out
    assert stopped_after < 60, stopped_after
    assert "error: process 0 of 2 failed" in _log_tail(logs / "process_0.log")
    steps = hf.load_training_checkpoint(str(work))  # the last complete checkpoint still loads
    assert steps[0] is not None


def _pid_of_process(index: int) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if f"REPIRL_PROCESS_ID={index}".encode() in env and b"repirl_jax.launch" in cmdline:
            return int(pid)
    raise AssertionError(f"no running process with REPIRL_PROCESS_ID={index}")


def test_process_rows_and_allgather_cover_every_row_once():
    assert distributed.process_rows(10) == slice(0, 10)  # one process: everything
    x = np.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(distributed.allgather_rows(x, 6), x)
    assert distributed.allgather_stats({"timeout": 2}) == {"timeout": 2}


def test_initialize_reads_the_environment():
    assert distributed.initialize({}) is False  # no cluster described: single process, nothing joined
    assert distributed.initialize({distributed.ENV_COORDINATOR: "127.0.0.1:1234",
                                   distributed.ENV_NUM_PROCESSES: "1", distributed.ENV_PROCESS_ID: "0"}) is False
    with pytest.raises(ValueError, match="REPIRL_NUM_PROCESSES"):
        distributed.initialize({distributed.ENV_COORDINATOR: "127.0.0.1:1234"})
    assert distributed._auto_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}) == "slurm"
    assert distributed._auto_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert distributed._auto_cluster({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == "tpu"


def test_memory_plan_of_a_tiny_config():
    """tools/memory_plan.py on the tiny test config, 8 devices, mesh (1, 4, 2): every program compiles,
    the state it reports matches the parameter count, and the sharded programs contain collectives."""
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "memory_plan.py"),
                          f"--config={REPO}/tests/train_config.py", "--devices=8", "--mesh=1,4,2"],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    peak = int(lines[-1].removeprefix("peak_bytes_per_device="))
    for name in ("sampler", "prm_token_rewards", "prm_update", "policy_update"):
        assert any(line.startswith(name) for line in lines), (name, out.stdout)
    assert "all-gather" in out.stdout and "all-reduce" in out.stdout
    # In-process: the figures behind the printout.
    from tests.train_config import tiny_config
    from tools import memory_plan
    f = memory_plan.plan(tiny_config("repirl"), 8, (1, 4, 2), log=lambda *_: None)
    assert f["peak"] == peak
    # Resident = policy + PRM trunk (float32 params) and their two Adam moments, fsdp x tensor sharded
    # (at least 1/8 of the whole when everything divides, more where an axis stays replicated).
    whole = 2 * 3 * 4 * f["params"]
    assert whole / 8 <= f["resident_bytes"] <= whole
    for p in f["programs"].values():
        assert p["temp"] >= 0 and p["peak"] >= f["resident_bytes"]
