"""Qwen2 / Qwen2.5 / Qwen3 / Llama decoder in Flax linen, used as pure functions of a parameter pytree.

    hidden, cache = forward(params, cfg, tokens_bt, positions_bt, mask_bt, cache=None, act=None)
    logits_btv    = lm_logits(params, cfg, hidden_bte)        # float32
    cache         = init_cache(cfg, batch, length)            # for the sampler

Parameters are a plain nested dict (`init_params`, or `repirl_jax.hf.load_params` from a checkpoint).
Every parameter carries logical axis names (`param_axes`), which `repirl_jax.runtime.sharding` maps to the mesh.

Attention is causal over *slots*: query slot i sees key slot j iff j <= i and slot j holds a real token
(without a cache a padding slot also sees itself, so no row is fully masked).
Without a cache the slots are the input positions 0..T-1, so left padding is handled by `mask_bt`
(0 on padding) and RoPE `positions_bt` (0, 1, ... from each row's first real token). With a cache, each
row writes its T new tokens at its own slot `cache.index[b]`, so rows of different lengths decode as
they would alone.

Weight layouts (chosen for the decode step: no transposes inside the jitted loop):
  embed [vocab, embed]; q [embed, heads, head_dim]; k, v [embed, kv_heads, head_dim];
  o [heads, head_dim, embed]; gate, up [embed, mlp]; down [mlp, embed]; lm_head [embed, vocab].
KV cache per layer: k [B, kv_heads, head_dim, S] (scores become a plain batched dot), v [B, kv_heads, S, head_dim].
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from repirl_jax.models import attention
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime.sharding import ActivationSharding, constrain, tree_shardings

Params = dict[str, Any]
_MASK_VALUE = attention.MASK_VALUE


class KVCache(NamedTuple):
    """Per-layer key/value buffers and per-row bookkeeping. S = cache length (slots)."""
    k: tuple[jax.Array, ...]  # L x [B, K, D, S]
    v: tuple[jax.Array, ...]  # L x [B, K, S, D]
    valid: jax.Array  # [B, S] bool: slot holds a real (non-padding) token
    index: jax.Array  # [B] int32: next slot to write, per row; or a scalar: the same slot for every row


def init_cache(cfg: QwenConfig, batch: int, length: int, dtype=None) -> KVCache:
    dtype = jnp.dtype(dtype or cfg.dtype)
    k, d, l = cfg.num_key_value_heads, cfg.head_dim, cfg.num_hidden_layers
    return KVCache(
        k=tuple(jnp.zeros((batch, k, d, length), dtype) for _ in range(l)),
        v=tuple(jnp.zeros((batch, k, length, d), dtype) for _ in range(l)),
        valid=jnp.zeros((batch, length), bool),
        index=jnp.zeros((batch,), jnp.int32),
    )


CACHE_AXES = ("batch", "act_kv_heads", "head_dim", "cache_length")  # k
V_CACHE_AXES = ("batch", "act_kv_heads", "cache_length", "head_dim")  # v


def _param(module: nn.Module, name: str, shape, axes, init=nn.initializers.normal(0.02)):
    dtype = jnp.dtype(module.cfg.param_dtype)
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class RMSNorm(nn.Module):
    cfg: QwenConfig
    size: int
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x):
        scale = _param(self, "scale", (self.size,), (self.axis_name,), nn.initializers.ones)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
        return (scale.astype(jnp.float32) * x32).astype(x.dtype)


def dense(x, w_io, out_dtype=None):
    """x [..., in] @ w [in, out], the leading axes flattened first (free: a row-major reshape); `out_dtype` as
    einsum's preferred_element_type. On [B, T, in] operands the weight gradient x^T g contracts two axes, and
    XLA's CPU dot canonicaliser then copies the [B, T, out] operand transposed, with g's producer (e.g. the
    SwiGLU backward) fused into that slow loop: 0.13-0.35 s per MLP product, ~4 s of a 40 s step of
    tools/bench_train.py --size=S. On [B * T, in] it contracts one axis and copies nothing."""
    y = jnp.einsum("ni,io->no", x.reshape(-1, x.shape[-1]), w_io, preferred_element_type=out_dtype)
    return y.reshape(x.shape[:-1] + (w_io.shape[-1],))


def _lora_a_init(key, shape, dtype):
    """A LoRA A [in, r]: uniform in +-1/sqrt(in) (the usual Kaiming-uniform bound); B starts at zero."""
    bound = shape[0] ** -0.5
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def lora_term(module: nn.Module, name: str, x, in_axis: str, out_axes: tuple[str, ...], out_shape: tuple[int, ...]):
    """The adapter's contribution (alpha / r) (x A) B to projection `name` of x [..., in] -> [..., prod(out_shape)],
    or None when the config gives `name` no adapter. A [in, r] and B [r, *out_shape] carry the logical axes of
    the weight they modify, so they are sharded like it."""
    cfg = module.cfg
    if not cfg.lora_target(name):
        return None
    r, dt = cfg.lora_rank, jnp.dtype(cfg.dtype)
    a = _param(module, f"{name}_lora_a", (x.shape[-1], r), (in_axis, "lora"), _lora_a_init)
    b = _param(module, f"{name}_lora_b", (r, *out_shape), ("lora", *out_axes), nn.initializers.zeros)
    return dense(dense(x, a.astype(dt)), b.reshape(r, -1).astype(dt)) * jnp.asarray(cfg.lora_scale, dt)


def _plus(y, term):
    return y if term is None else y + term


def rope_inv_freq(cfg: QwenConfig) -> jax.Array:
    """RoPE inverse frequencies [D/2] float32: theta^(-2i/D), and for `rope_type="llama3"` (Llama 3.1+) the
    long wavelengths (> original_max_position / low_freq_factor) divided by `rope_factor`, the short ones
    (< original_max_position / high_freq_factor) kept, and a linear blend of the two in between."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    if cfg.rope_type != "llama3":
        return inv
    factor, low, high = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    context = cfg.rope_original_max_position
    wavelen = 2 * math.pi / inv
    slowed = jnp.where(wavelen > context / low, inv / factor, inv)
    blend = (context / wavelen - low) / (high - low)  # 0 at the long end of the band, 1 at the short end
    blended = (1 - blend) * slowed / factor + blend * slowed
    in_band = (wavelen >= context / high) & (wavelen <= context / low)
    return jnp.where(in_band, blended, slowed)


def rope_tables(positions_bt: jax.Array, inv_freq: jax.Array, max_position: int) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) of the RoPE angles, [B, T, 1, D/2] float32 each, looked up in a [max_position, D/2] table
    (a position >= max_position, the model's context, reads NaN); `inv_freq` from `rope_inv_freq`. Made once
    per forward pass and shared by every layer's q and k. The lookup is what keeps the cosines out of the
    rotations: computed from the positions in place, XLA fuses them into each rotation's loop and evaluates
    them once per head (~0.3 s a layer, forward and backward, at tools/bench_train.py --size=S shapes; 17
    against 6 ms for one rotation's forward and backward)."""
    angle = jnp.arange(max_position, dtype=jnp.float32)[:, None] * inv_freq  # [max_position, D/2]
    cos = jnp.take(jnp.cos(angle), positions_bt, axis=0)
    sin = jnp.take(jnp.sin(angle), positions_bt, axis=0)
    return cos[:, :, None, :], sin[:, :, None, :]


def _rotate_half(x, cos, sin):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


@jax.custom_vjp
def _rotate(x, cos, sin):
    return _rotate_half(x, cos, sin)


def _rotate_fwd(x, cos, sin):
    return _rotate_half(x, cos, sin), (cos, sin)


def _rotate_bwd(res, g):
    # A rotation's transpose is the rotation by minus the angle: one elementwise pass, like the forward.
    cos, sin = res
    return _rotate_half(g, cos, -sin), jnp.zeros_like(cos), jnp.zeros_like(sin)


_rotate.defvjp(_rotate_fwd, _rotate_bwd)


def rotary(x_btnd: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Rotate-half RoPE (the HF Qwen / Llama convention) by `rope_tables`' (cos, sin), in float32, result in x's dtype.
    The angles are treated as constants (positions are integers): no gradient flows into them."""
    return _rotate(x_btnd.astype(jnp.float32), *rope).astype(x_btnd.dtype)


def _write_rows(buf, new, index, axis):
    """Write new[b] into buf[b] starting at slot index[b] along `axis` (per-row dynamic update).

    A scalar `index` (every row at the same slot, as in the sampler) is one in-place dynamic-update-slice
    of the whole batch instead of a per-row scatter."""
    if jnp.ndim(index) == 0:
        start = [jnp.zeros((), jnp.int32)] * buf.ndim
        start[axis] = jnp.asarray(index, jnp.int32)
        return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), start)

    def one(b, n, i):
        start = [0] * b.ndim
        start[axis - 1] = i
        return jax.lax.dynamic_update_slice(b, n.astype(b.dtype), start)
    return jax.vmap(one)(buf, new, index)


def cached_attention(q_btkgd, k_btkd, v_btkd, layer_cache, cache_index, kv_mask_bts, dt):
    """Attention of T new queries over a KV cache, after writing the T new keys/values at `cache_index`.

    q [B, T, K, G, D] (already scaled), k/v [B, T, K, D]; layer cache (k [B, K, D, S], v [B, K, S, D]);
    cache_index [B] or a scalar (all rows at one slot); kv_mask [B, T, S] bool (slots each query sees).
    Every slot of the given cache is read: the sampler bounds S per segment of its decode loop (length
    buckets), so a step reads only slots up to its bucket's bound. Returns out [B, T, K, G, D] and the
    updated (k, v)."""
    ck, cv = layer_cache
    ck = _write_rows(ck, k_btkd.transpose(0, 2, 3, 1), cache_index, axis=3)  # [B, K, D, S]
    cv = _write_rows(cv, v_btkd.transpose(0, 2, 1, 3), cache_index, axis=2)  # [B, K, S, D]
    b, t, k, g, d = q_btkgd.shape
    # Scores [B, K, S, T*G] in the order the cache-times-query dot produces them (no transposed copies of
    # slot-sized arrays); softmax over S, normalised after the value dot on the small [B, K, T*G, D] output.
    qf = q_btkgd.transpose(0, 2, 4, 1, 3).reshape(b, k, d, t * g)
    scores = jnp.einsum("bkds,bkdq->bksq", ck.astype(dt), qf, preferred_element_type=jnp.float32)
    visible = jnp.repeat(kv_mask_bts.transpose(0, 2, 1), g, axis=2)[:, None]  # [B, 1, S, T*G]
    scores = jnp.where(visible, scores, _MASK_VALUE)
    weights = jnp.exp(scores - jnp.max(scores, axis=2, keepdims=True))
    total = jnp.sum(weights, axis=2)  # [B, K, T*G]
    out = jnp.einsum("bksq,bksd->bkqd", weights.astype(dt), cv.astype(dt), preferred_element_type=jnp.float32)
    out = (out / total[..., None]).astype(dt)
    return out.reshape(b, k, t, g, d).transpose(0, 2, 1, 3, 4), (ck, cv)


class Attention(nn.Module):
    cfg: QwenConfig
    act: ActivationSharding | None = None

    @nn.compact
    def __call__(self, x_bte, rope, kv_mask, layer_cache, cache_index):
        cfg = self.cfg
        e, h, k, d = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        dt = jnp.dtype(cfg.dtype)
        zeros = nn.initializers.zeros
        wq = _param(self, "q_kernel", (e, h, d), ("embed", "heads", "head_dim"))
        wk = _param(self, "k_kernel", (e, k, d), ("embed", "kv_heads", "head_dim"))
        wv = _param(self, "v_kernel", (e, k, d), ("embed", "kv_heads", "head_dim"))
        wo = _param(self, "o_kernel", (h, d, e), ("heads", "head_dim", "embed"))
        x = x_bte.astype(dt)
        b, t = x.shape[:2]
        q = _plus(dense(x, wq.astype(dt).reshape(e, h * d)),
                  lora_term(self, "q", x, "embed", ("heads", "head_dim"), (h, d))).reshape(b, t, h, d)
        kk = _plus(dense(x, wk.astype(dt).reshape(e, k * d)),
                   lora_term(self, "k", x, "embed", ("kv_heads", "head_dim"), (k, d))).reshape(b, t, k, d)
        vv = _plus(dense(x, wv.astype(dt).reshape(e, k * d)),
                   lora_term(self, "v", x, "embed", ("kv_heads", "head_dim"), (k, d))).reshape(b, t, k, d)
        if cfg.qkv_bias:
            q = q + _param(self, "q_bias", (h, d), ("heads", "head_dim"), zeros).astype(dt)
            kk = kk + _param(self, "k_bias", (k, d), ("kv_heads", "head_dim"), zeros).astype(dt)
            vv = vv + _param(self, "v_bias", (k, d), ("kv_heads", "head_dim"), zeros).astype(dt)
        if cfg.qk_norm:
            q = RMSNorm(cfg, d, "head_dim", name="q_norm")(q)
            kk = RMSNorm(cfg, d, "head_dim", name="k_norm")(kk)
        q = rotary(q, rope)
        kk = rotary(kk, rope)
        q = constrain(q, ("batch", "length", "act_heads", "head_dim"), self.act)

        q = q.reshape(b, t, k, cfg.num_groups, d) * jnp.asarray(d ** -0.5, dt)
        if layer_cache is None:
            out = attention.causal_attention(q, kk, vv, kv_mask, impl=cfg.attn_impl, block=cfg.attn_block, dt=dt,
                                             remat=cfg.remat != "none")
            new_cache = None
        else:
            out, (ck, cv) = cached_attention(q, kk, vv, layer_cache, cache_index, kv_mask, dt)
            new_cache = (constrain(ck, CACHE_AXES, self.act), constrain(cv, V_CACHE_AXES, self.act))
        out = out.reshape(b, t, h * d)
        y = _plus(dense(out, wo.astype(dt).reshape(h * d, e)), lora_term(self, "o", out, "heads", ("embed",), (e,)))
        if cfg.o_bias:
            y = y + _param(self, "o_bias", (e,), ("norm",), zeros).astype(dt)
        return y, new_cache


class MLP(nn.Module):
    cfg: QwenConfig
    act: ActivationSharding | None = None

    @nn.compact
    def __call__(self, x_bte):
        cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
        e, m = cfg.hidden_size, cfg.intermediate_size
        wg = _param(self, "gate_kernel", (e, m), ("embed", "mlp"))
        wu = _param(self, "up_kernel", (e, m), ("embed", "mlp"))
        wd = _param(self, "down_kernel", (m, e), ("mlp", "embed"))
        x = x_bte.astype(dt)
        gate = _plus(dense(x, wg.astype(dt)), lora_term(self, "gate", x, "embed", ("mlp",), (m,)))
        up = _plus(dense(x, wu.astype(dt)), lora_term(self, "up", x, "embed", ("mlp",), (m,)))
        hidden = constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"), self.act)
        return _plus(dense(hidden, wd.astype(dt)), lora_term(self, "down", hidden, "mlp", ("embed",), (e,)))


class DecoderLayer(nn.Module):
    cfg: QwenConfig
    act: ActivationSharding | None = None

    @nn.compact
    def __call__(self, x_bte, rope, kv_mask, layer_cache, cache_index):
        cfg = self.cfg
        h = RMSNorm(cfg, cfg.hidden_size, name="input_norm")(x_bte)
        h, new_cache = Attention(cfg, self.act, name="attn")(h, rope, kv_mask, layer_cache, cache_index)
        x = x_bte + h
        h = MLP(cfg, self.act, name="mlp")(RMSNorm(cfg, cfg.hidden_size, name="post_attn_norm")(x))
        x = constrain(x + h, ("batch", "length", "act_embed"), self.act)
        return x, new_cache


class Qwen(nn.Module):
    """Embedding -> L decoder layers -> final RMSNorm (the LM head is applied by `lm_logits`)."""
    cfg: QwenConfig
    act: ActivationSharding | None = None

    def setup(self):
        cfg = self.cfg
        self.embed = _param(self, "embed", (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
        layer_cls = DecoderLayer
        if cfg.remat != "none":
            policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if cfg.remat == "dots" else None
            layer_cls = nn.remat(DecoderLayer, policy=policy)
        self.layers = [layer_cls(cfg, self.act, name=f"layer_{i}") for i in range(cfg.num_hidden_layers)]
        self.final_norm = RMSNorm(cfg, cfg.hidden_size)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(self, "lm_head", (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"))

    def __call__(self, tokens_bt, positions_bt, mask_bt, cache: KVCache | None = None, segments=None):
        dt = jnp.dtype(self.cfg.dtype)
        # Vocab-parallel lookup: the table is gathered over fsdp first (as every fsdp weight is), so the rows
        # come out whole and the batch constraint below is a local slice, not a full rematerialisation.
        table = constrain(self.embed, ("vocab", None), self.act)
        x = jnp.take(table, tokens_bt, axis=0).astype(dt)
        x = constrain(x, ("batch", "length", "act_embed"), self.act)
        t = tokens_bt.shape[1]
        mask_bt = mask_bt.astype(bool)
        if cache is None:
            kv_mask = mask_bt  # [B, T]: the causal mask is built inside attention.causal_attention
            index = None
        else:
            s = cache.valid.shape[1]
            # A query sees every valid slot except those written later in this same call: with slots filled
            # in order that is the causal rule; it also holds for a ring of slots (continuous batching),
            # where a row's older tokens may sit at higher slots than its newest.
            index_b = jnp.broadcast_to(cache.index, (tokens_bt.shape[0],))[:, None]
            q_slot = index_b + jnp.arange(t)[None, :]  # [B, T]
            slot = jnp.arange(s)[None, None, :]
            later = (slot > q_slot[:, :, None]) & (slot < index_b[:, :, None] + t)
            valid = _write_rows(cache.valid, mask_bt, cache.index, axis=1)
            kv_mask = valid[:, None, :] & ~later  # [B, T, S]
            if segments is not None:  # packed sequences: a query sees only its own sequence's slots
                kv_mask &= segments[0][:, :, None] == segments[1][:, None, :]
            index = cache.index
        rope = rope_tables(positions_bt, rope_inv_freq(self.cfg), self.cfg.max_position_embeddings)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            x, c = layer(x, rope, kv_mask, layer_cache, index)
            if c is not None:
                new_k.append(c[0])
                new_v.append(c[1])
        x = self.final_norm(x)
        new_cache = None if cache is None else KVCache(tuple(new_k), tuple(new_v), valid, cache.index + t)
        return x, new_cache


# --- pure-function API ------------------------------------------------------------------------------

def _dummy_inputs():
    z = jnp.zeros((1, 1), jnp.int32)
    return z, z, jnp.ones((1, 1), bool)


def init_params(cfg: QwenConfig, rng: jax.Array) -> Params:
    """Random parameters as a plain nested dict: normal(0.02) matrices, unit norm scales, zero biases (and with
    LoRA: uniform A, zero B).

    Built leaf by leaf from `abstract_params` (the module's own description), so no forward pass is traced
    or compiled."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_params(cfg))
    keys = jax.random.split(rng, len(leaves))
    out = []
    for (path, leaf), key in zip(leaves, keys):
        name = jax.tree_util.keystr(path)
        if name.endswith("_lora_b']"):
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
        elif name.endswith("_lora_a']"):
            out.append(_lora_a_init(key, leaf.shape, leaf.dtype))
        elif name.endswith("['scale']"):
            out.append(jnp.ones(leaf.shape, leaf.dtype))
        elif "bias" in name:
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
        else:
            out.append((0.02 * jax.random.normal(key, leaf.shape, jnp.float32)).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def abstract_params(cfg: QwenConfig) -> Params:
    """ShapeDtypeStructs of every parameter, without allocating anything."""
    return nn.unbox(jax.eval_shape(lambda: Qwen(cfg).init(jax.random.key(0), *_dummy_inputs())["params"]))


def param_axes(cfg: QwenConfig) -> Params:
    """The logical axis names of every parameter (a tree of PartitionSpecs of names)."""
    boxed = jax.eval_shape(lambda: Qwen(cfg).init(jax.random.key(0), *_dummy_inputs())["params"])
    return nn.get_partition_spec(boxed)


def param_shardings(cfg: QwenConfig, mesh=None):
    """NamedSharding of every parameter on `mesh` (SingleDeviceSharding on the first local device if None)."""
    abstract = abstract_params(cfg)
    if mesh is None:
        dev = jax.local_devices()[0]
        return jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(dev), abstract)
    return tree_shardings(param_axes(cfg), abstract, mesh)


def forward(params: Params, cfg: QwenConfig, tokens_bt, positions_bt, mask_bt, cache: KVCache | None = None,
            act: ActivationSharding | None = None, segments=None):
    """Final hidden states [B, T, E] (after the last RMSNorm) and the updated cache (None without one).

    segments (with a cache): (the new tokens' sequence ids [B, T], the cache slots' [B, S]); a token then
    attends only to slots of its own sequence (several prompts packed into one row).

    Under a mesh, weights stored in a wider dtype than the compute dtype are cast on their shards first,
    so the fsdp all-gathers move compute-dtype bytes (half of float32's for bfloat16); the forward casts
    them to that dtype anyway, so the outputs (and gradients) are unchanged."""
    if act is not None and params["embed"].dtype != jnp.dtype(cfg.dtype):  # not e.g. the sampler's copy
        shardings = tree_shardings(param_axes(cfg), abstract_params(cfg), act.mesh, act.rules)
        params = jax.lax.with_sharding_constraint(inference_params(params, cfg), shardings)
    return Qwen(cfg, act).apply({"params": params}, tokens_bt, positions_bt, mask_bt, cache, segments)


def inference_params(params: Params, cfg: QwenConfig) -> Params:
    """The parameters as the forward pass uses them: every matrix and bias in the compute dtype (the forward
    casts them to it anyway), norm scales as stored (the forward reads them in float32). Outputs equal the
    original's exactly; with float32 storage and bfloat16 compute the copy is half the size."""
    dt = jnp.dtype(cfg.dtype)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x if jax.tree_util.keystr(path).endswith("['scale']") else x.astype(dt), params)


def lm_head_weight(params: Params, cfg: QwenConfig) -> jax.Array:
    """The LM head as [embed, vocab]: the transposed embedding when tied (`tie_word_embeddings`)."""
    return params["embed"].T if cfg.tie_word_embeddings else params["lm_head"]


def lm_head_rows(params: Params, cfg: QwenConfig) -> jax.Array:
    """The LM head as [vocab, embed] rows: the embedding table itself when tied."""
    return params["embed"] if cfg.tie_word_embeddings else params["lm_head"].T


def lm_logits(params: Params, cfg: QwenConfig, hidden_bte, act: ActivationSharding | None = None,
              head_ev: jax.Array | None = None):
    """LM-head logits [B, T, V] in float32. `head_ev` overrides the head (e.g. a transposed copy hoisted
    out of a decode loop)."""
    dt = jnp.dtype(cfg.dtype)
    w = lm_head_weight(params, cfg) if head_ev is None else head_ev
    out = jnp.einsum("bte,ev->btv", hidden_bte.astype(dt), w.astype(dt), preferred_element_type=jnp.float32)
    return constrain(out, ("batch", "length", "act_vocab"), act)


def positions_from_mask(mask_bt: jax.Array) -> jax.Array:
    """RoPE positions for left-padded rows: 0 at each row's first real token (0 on the padding too)."""
    return jnp.maximum(jnp.cumsum(mask_bt.astype(jnp.int32), axis=1) - 1, 0)


def token_log_probs(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
    """log softmax(logits)[target] in float32, [B, T]."""
    logits = logits_btv.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.take_along_axis(logits, targets_bt[..., None], axis=-1)[..., 0] - lse
