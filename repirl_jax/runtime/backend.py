"""What the JAX backend can compute: the compute dtype a config's `model.dtype` becomes on this backend.

XLA's CPU backend (JAX 0.10) cannot run some bfloat16 dots with a float32 result (`UNIMPLEMENTED:
Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32`), e.g. the decode step's attention
scores over the KV cache. `compute_dtype("bfloat16")` probes the dot forms the model uses once per
backend and returns "float32" there (logged once), so the paper configs' bf16 default runs anywhere;
GPUs and TPUs keep bfloat16.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

log = logging.getLogger("repirl_jax")


def _probe_forms():
    """(name, fn, argument shapes) of the bf16 x bf16 -> f32 dot forms in models/qwen.py and logprobs.py."""
    f32 = jnp.float32
    return (
        ("cached attention scores", lambda q, k: jnp.einsum("btkgd,bkds->bkgts", q, k, preferred_element_type=f32),
         ((2, 1, 2, 2, 8), (2, 2, 8, 5))),
        ("blocked attention scores", lambda q, k: jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=f32),
         ((2, 2, 2, 4, 8), (2, 2, 5, 8))),
        ("LM head", lambda h, w: jnp.einsum("bte,ev->btv", h, w, preferred_element_type=f32), ((2, 3, 8), (8, 16))),
    )


@functools.lru_cache(maxsize=None)
def bf16_dots_supported(backend: str | None = None) -> bool:
    """True if every probed bf16 dot form compiles and runs on `backend` (default: jax.default_backend())."""
    device = jax.devices(backend)[0] if backend else jax.devices()[0]
    for name, fn, shapes in _probe_forms():
        args = [jax.device_put(jnp.ones(s, jnp.bfloat16), device) for s in shapes]
        try:
            jax.block_until_ready(jax.jit(fn)(*args))
        except Exception as e:  # XLA raises JaxRuntimeError (UNIMPLEMENTED) or XlaRuntimeError
            log.debug("bf16 probe %r failed on %s: %s", name, device.platform, e)
            return False
    return True


@functools.lru_cache(maxsize=None)
def _warn_once(backend: str) -> None:
    log.warning("the %s backend cannot run bfloat16 matrix products with float32 results: computing in "
                "float32 instead of model.dtype=bfloat16 (parameters keep their stored dtype)", backend)


def compute_dtype(requested: str, backend: str | None = None) -> str:
    """`requested` ("float32" | "bfloat16"), or "float32" where the backend lacks bfloat16 dots."""
    if requested != "bfloat16" or bf16_dots_supported(backend):
        return requested
    _warn_once(backend or jax.default_backend())
    return "float32"
