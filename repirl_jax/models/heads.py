"""Heads on the Qwen trunk: the PRM's scalar token reward, the implicit (log-ratio) reward, the PPO value.

PRM parameters are `{"trunk": <Qwen params>, "head": {"kernel": [E], "bias": []}}` (METHOD.md section 1):
r_phi(s_t, a_t) = h_t . kernel + bias, with h_t the final hidden state at the position of token a_t, i.e.
after the model has read a_t. The value head has the same shape and reads the state *before* a_t.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from repirl_jax.models.config import QwenConfig

HEAD_AXES = {"kernel": P("embed"), "bias": P()}


def init_scalar_head(cfg: QwenConfig, rng: jax.Array, scale: float = 0.02) -> dict:
    """kernel ~ normal(0, scale) [E], bias 0 (zero-initialised, METHOD.md section 1)."""
    return {"kernel": scale * jax.random.normal(rng, (cfg.hidden_size,), jnp.float32),
            "bias": jnp.zeros((), jnp.float32)}


def abstract_scalar_head(cfg: QwenConfig) -> dict:
    return {"kernel": jax.ShapeDtypeStruct((cfg.hidden_size,), jnp.float32),
            "bias": jax.ShapeDtypeStruct((), jnp.float32)}


def apply_scalar_head(head: dict, hidden_bte: jax.Array) -> jax.Array:
    """[B, T, E] -> [B, T] float32."""
    return jnp.einsum("bte,e->bt", hidden_bte.astype(jnp.float32), head["kernel"].astype(jnp.float32)) + head["bias"]
