"""runtime/host_memory: with glibc told to keep freed memory, a large buffer freed by a worker thread (as
XLA:CPU frees a step's temporaries) is reused by the next allocation instead of being faulted in again;
small models and the switch leave malloc alone.

Each case runs in a fresh process: the setting must precede any worker thread's first allocation, and it
would change this test process's malloc for the tests after it. The effect on a training step is measured
by `tools/bench_train.py` (see the module docstring), not here."""

import json
import os
import subprocess
import sys

import pytest

from repirl_jax.runtime import host_memory

# Allocate 256 MB in a worker thread, touch every page, free it; twice. Report each round's page faults.
PROBE = """
import ctypes, json, resource, sys, threading
from repirl_jax.runtime import host_memory
kept = host_memory.keep_freed_host_memory(int(sys.argv[1]))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size, faults = 256 << 20, []
def one_round():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
for _ in range(2):
    t = threading.Thread(target=one_round)
    t.start()
    t.join()
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _probe(num_params: int, switch: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENV_SWITCH}
    if switch is not None:
        env[host_memory.ENV_SWITCH] = switch
    out = subprocess.run([sys.executable, "-c", PROBE, str(num_params)], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or host_memory.accelerator_plugin_installed(),
                    reason="glibc's malloc on a CPU-only JAX")
def test_a_big_model_reuses_freed_memory_and_a_small_one_is_left_alone():
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    big = _probe(host_memory.MIN_PARAMS)
    small = _probe(host_memory.MIN_PARAMS - 1)
    off = _probe(10 * host_memory.MIN_PARAMS, switch="0")
    forced = _probe(1, switch="1")
    assert big["kept"] and forced["kept"] and not small["kept"] and not off["kept"]
    for untouched in (small, off):  # glibc's default: a fresh mapping each time, every page faulted in
        assert min(untouched["faults"]) > 0.9 * pages, untouched
    for kept in (big, forced):  # the second round finds the first one's memory in the heap
        assert kept["faults"][0] > 0.9 * pages and kept["faults"][1] < 0.01 * pages, kept
