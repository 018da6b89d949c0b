"""Multi-host runs on JAX's own multi-controller runtime (`jax.distributed`).

Every process runs the same program on its own devices; a jitted step over a mesh that spans processes
is one SPMD program and XLA's collectives cross hosts. This module holds the few host-side pieces that
are not automatic:

- `initialize()`: join the runtime from the environment (explicit `REPIRL_*` variables, or SLURM / TPU
  pod / Open MPI detection by JAX), with gloo collectives when the platform is the CPU.
- `global_rows` / `to_host`: host arrays in, global `jax.Array`s out (each process transfers only the
  rows its devices hold), and back to a full host copy on every process; `join_rows` concatenates global
  arrays on the devices (chunked results that need not visit the host).
- `process_rows` / `allgather_rows`: each process scores only its own slice of the rollouts; the slices
  are then gathered so every process holds the same outcome rewards.
- `sync(name)`: a barrier, for file-system steps that only process 0 performs.

With one process every function is a cheap local no-op-like path, so the trainer has one code path.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

ENV_COORDINATOR = "REPIRL_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "REPIRL_NUM_PROCESSES"
ENV_PROCESS_ID = "REPIRL_PROCESS_ID"
ENV_LOCAL_DEVICES = "REPIRL_LOCAL_DEVICE_IDS"  # optional, e.g. "0,1,2,3"
ENV_MODE = "REPIRL_DISTRIBUTED"  # "auto": always let jax.distributed detect the cluster (e.g. TPU pods)
ENV_HEARTBEAT = "REPIRL_HEARTBEAT_TIMEOUT_S"  # a dead process is noticed (and the job stopped) after this


def _auto_cluster(env: Mapping[str, str]) -> str | None:
    """Which launcher started us, if it started more than one process."""
    if int(env.get("SLURM_NTASKS", env.get("SLURM_STEP_NUM_TASKS", "1")) or 1) > 1 and "SLURM_JOB_ID" in env:
        return "slurm"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "openmpi"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "tpu"
    return None


def initialize(env: Mapping[str, str] | None = None) -> bool:
    """Join the multi-controller runtime when the environment describes more than one process.

    Explicit: REPIRL_COORDINATOR=host:port, REPIRL_NUM_PROCESSES, REPIRL_PROCESS_ID (and optionally
    REPIRL_LOCAL_DEVICE_IDS). Otherwise SLURM (srun with several tasks), Open MPI and multi-host TPU pods
    (TPU_WORKER_HOSTNAMES, or REPIRL_DISTRIBUTED=auto) are detected by `jax.distributed.initialize()`
    itself. Returns True if the job is multi-process.
    Must run before any other JAX call.
    """
    env = os.environ if env is None else env
    heartbeat = int(env.get(ENV_HEARTBEAT, "100"))
    kwargs: dict[str, Any] = {"heartbeat_timeout_seconds": heartbeat}
    if env.get(ENV_COORDINATOR):
        try:
            kwargs.update(coordinator_address=env[ENV_COORDINATOR], num_processes=int(env[ENV_NUM_PROCESSES]),
                          process_id=int(env[ENV_PROCESS_ID]))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{ENV_COORDINATOR} is set, so {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be "
                             f"integers too ({e})") from None
        if kwargs["num_processes"] <= 1:
            return False
        if env.get(ENV_LOCAL_DEVICES):
            kwargs["local_device_ids"] = [int(i) for i in env[ENV_LOCAL_DEVICES].split(",")]
    elif env.get(ENV_MODE) != "auto" and _auto_cluster(env) is None:
        return False
    # Collectives between the CPU devices of different processes (tests, CPU-only hosts); the accelerator
    # backends use their own (NCCL on GPU, ICI/DCN on TPU), so this is harmless there.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.warning("process %d of %d: %d local devices, %d in all", jax.process_index(), jax.process_count(),
                jax.local_device_count(), jax.device_count())
    return True


def is_main() -> bool:
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Barrier across processes (no-op with one)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def global_rows(x, sharding) -> jax.Array:
    """A host array, or a process-local device array (the same on every process), as a global array with
    `sharding`; each process places only the slices its own devices hold (a device array stays on the
    device; a global one is resharded by the runtime)."""
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


@functools.partial(jax.jit, static_argnums=0)
def join_rows(sharding, *parts):
    """Concatenate arrays along their rows on the devices (global arrays of every process too) into one
    array with `sharding`: [n_1, ...], [n_2, ...] -> [sum n_i, ...]."""
    return jax.lax.with_sharding_constraint(jnp.concatenate(parts), sharding)


def put_tree(tree, shardings):
    """`jax.device_put(tree, shardings)` that also works when the shardings span processes (every process
    holds the same values, e.g. from the same seed; each transfers its own shards)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)  # already global: a reshard inside the runtime
        return global_rows(x, sharding)
    return jax.tree.map(one, tree, shardings)


def to_host(tree):
    """Full numpy copies of (possibly multi-host) arrays, on every process."""
    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(one, tree)


def process_rows(n: int) -> slice:
    """This process's contiguous share of `n` host-side work items (e.g. rollouts to score)."""
    per = -(-n // jax.process_count())
    start = min(jax.process_index() * per, n)
    return slice(start, min(start + per, n))


def allgather_rows(local: np.ndarray, n: int) -> np.ndarray:
    """Concatenate every process's `process_rows(n)` slice (in process order) into the full [n, ...] array."""
    local = np.asarray(local)
    if jax.process_count() == 1:
        return local
    per = -(-n // jax.process_count())
    padded = np.zeros((per,) + local.shape[1:], local.dtype)
    padded[:len(local)] = local
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # [processes, per, ...]
    return gathered.reshape((-1,) + local.shape[1:])[:n]


def allgather_stats(stats: Mapping[str, float]) -> dict[str, float]:
    """Sum per-process counters (e.g. reward timeouts) over processes; keys must agree."""
    if jax.process_count() == 1:
        return dict(stats)
    keys = sorted(stats)
    vals = np.asarray([float(stats[k]) for k in keys], np.float64)
    total = np.asarray(multihost_utils.process_allgather(vals)).sum(axis=0)
    return {k: float(v) for k, v in zip(keys, total)}
