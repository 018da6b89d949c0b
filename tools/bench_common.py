"""What the tool scripts share: simulated CPU devices, the model shapes they time, best-of-N timing.

Imports no JAX, so a script can call `simulate_devices` before it imports jax."""

import os
import time

from repirl_jax.runtime.host_memory import keep_freed_host_memory  # imports no JAX either

# As the commands do (REPIRL_KEEP_HOST_MEMORY=0 times both sides without it): before any backend starts.
keep_freed_host_memory()


def simulate_devices(argv, default: int = 8) -> None:
    """Make the CPU backend show `--devices=N` (default 8) devices; call before jax is imported."""
    n = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--devices=")), default)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

SHAPES = {
    "XS": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
               intermediate_size=768),
    "S": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=2,
              intermediate_size=2048),
}


def cpu_model() -> str:
    """The processor's model name and core count (ratios between kernels move with it: name it)."""
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    flags_ = ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        flags_ = ", ".join(x for x in ("avx512f", "amx_tile", "avx512_bf16") if f" {x}" in text)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores" + (f" ({flags_})" if flags_ else "")


def best_time(fn, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls of `fn`, after one untimed warm-up call (compilation)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times_interleaved(fns, repeats: int) -> list[float]:
    """Seconds of the fastest of `repeats` calls of each of `fns`, after one untimed warm-up call each, the
    timed calls alternating between them (a, b, a, b, ...): on a machine shared with other jobs a change of
    load then hits every side alike instead of only the one timed while it lasts."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [min(ts) for ts in times]


def measure_machine():
    """(memory bandwidth bytes/s, matmul peak FLOP/s) of this machine, measured with XLA itself: the sum of a
    256 MiB array and a 2048 x 2048 float32 product, best of 5 each."""
    import jax
    import jax.numpy as jnp
    x = jnp.ones((64 * 2**20,), jnp.float32)  # 256 MiB, far beyond the caches
    total = jax.jit(jnp.sum)
    t = best_time(lambda: total(x).block_until_ready(), 5)
    bandwidth = x.nbytes / t
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    t = best_time(lambda: mm(a).block_until_ready(), 5)
    return bandwidth, 2 * 2048**3 / t


def machine_speed() -> str:
    """The machine's speed now, for runs whose two sides are timed minutes apart (a shared machine's speed
    drifts): numpy's float32 matmul (its BLAS, all cores; best of 10 products of 1024 x 1024) and a 256 MB
    copy (best of 5). Printed before and after each side, a change between them shows in the ratio."""
    import numpy as np
    a = np.random.RandomState(0).rand(1024, 1024).astype(np.float32)
    src, dst = np.ones(2**26, np.float32), np.empty(2**26, np.float32)

    def best(fn, n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)
    gflops = 2 * 1024**3 / best(lambda: a @ a, 10) / 1e9
    gbs = 2 * src.nbytes / best(lambda: np.copyto(dst, src), 5) / 1e9  # read + write
    return f"matmul {gflops:.0f} GFLOP/s, copy {gbs:.1f} GB/s"
