"""Keep the host memory XLA:CPU frees, so a jitted step reuses its temporary buffer instead of re-faulting it.

XLA:CPU gives each execution of an executable one temporary buffer (all its intermediates: gigabytes for a
training step of a 100M-parameter model), allocated with `posix_memalign` on one of its worker threads and
freed when the execution ends. glibc serves a request that large from a fresh `mmap` (always, in a worker
thread's arena) and returns it with `munmap`, so every step faults in and zero-fills every page again.

`keep_freed_host_memory()` sets three glibc malloc options (`mallopt`): one arena for all threads, no
`mmap` per allocation, no trimming of the heap's top. Freed buffers then stay in the heap and the next step
reuses them. The cost: the process's resident memory stays at its peak (it is not returned to the OS), and
all threads share one arena, whose free lists a model of many small buffers searches more often: small
models (`MIN_PARAMS`) are slower with it and keep glibc's defaults. WORKSPACE.md has the measurements.

It only helps where XLA computes on the host CPU: the commands call it when no accelerator plugin is
installed, before any JAX backend starts its worker threads (a thread keeps the arena it first allocated
from).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os

log = logging.getLogger("repirl_jax")

ENV_SWITCH = "REPIRL_KEEP_HOST_MEMORY"  # "0": leave malloc as it is; "1": set it even with an accelerator plugin
MIN_PARAMS = 5_000_000  # smaller models (the demo, the tests' tiny ones) keep glibc's defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # <malloc.h>
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin",
                        "libtpu", "jax_plugins")


def accelerator_plugin_installed() -> bool:
    """Whether a JAX GPU/TPU plugin is importable (checked without starting any backend)."""
    return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def keep_freed_host_memory(num_params: int | None = None) -> bool:
    """Set glibc's malloc to keep freed memory (see the module docstring) for a process that runs a model of
    `num_params` parameters (None: unknown, e.g. a command given a checkpoint). True if it was set. False
    when `REPIRL_KEEP_HOST_MEMORY=0`, off glibc, and (unless the variable is "1") when an accelerator plugin
    is installed or the model is under `MIN_PARAMS`."""
    switch = os.environ.get(ENV_SWITCH, "")
    wanted = not accelerator_plugin_installed() and (num_params is None or num_params >= MIN_PARAMS)
    if switch == "0" or not (switch == "1" or wanted):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to set
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 is SIZE_MAX once glibc widens it: never trim. Each call returns 1 on success.
    ok = all(mallopt(param, value) == 1 for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                                                             (_M_TRIM_THRESHOLD, -1)))
    log.debug("host memory: glibc malloc keeps freed memory (one arena, no mmap, no trim): %s", ok)
    return ok
