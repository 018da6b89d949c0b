"""Jitted sampler: one prefill, then a single `lax.while_loop` of decode steps over a preallocated KV cache.

    out = generate(params, cfg, prompt_tokens_bp, prompt_mask_bp, SamplingConfig(...), rng)

Prompts are left-padded to a width P (`pad_prompts`: max_prompt_len, or with `fit` the batch's longest prompt
rounded up to one of a few buckets), so every batch of the same (B, P, config) runs the same compiled
program. Each row has its own RoPE positions (from its first real token) and its own cache write index, so
a row decodes exactly as it would alone. Rows stop on any stop token or at
`max_new_tokens`; the loop ends when every row has stopped.

Returned log-probs are those of the *sampling* distribution (temperature, top-k, top-p applied), which is
what the IRL importance weights and the PPO ratio need (METHOD.md section 3). Under greedy decoding, where
that distribution is a point mass, they are the model's own log-probs at temperature 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from repirl_jax.models import decode, qwen
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime.sharding import ActivationSharding, constrain

FINISH_STOP, FINISH_LENGTH = 0, 1
DECODE_IMPLS = ("auto", "model", "weight_major")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    greedy: bool = False
    stop_token_ids: tuple[int, ...] = ()
    num_samples: int = 1  # samples per prompt; rows b*n .. b*n+n-1 belong to prompt b
    pad_token_id: int = 0
    prefill_chunk: int = 512  # prompt tokens per prefill pass (bounds the [rows, heads, chunk, P] scores)
    # > 0: the prefill packs the prompts' real tokens into one row of this many slots (at least their number;
    # under a mesh, one that does not split rows), instead of running B x P left-padded slots.
    prefill_pack: int = 0
    # Length buckets: the decode loop runs in segments of `slot_bucket` steps, and a segment's cache holds
    # only the slots written so far plus that segment's, so a step reads P + (a multiple of slot_bucket)
    # slots, not P + max_new. 0: one segment over the full cache.
    slot_bucket: int = 512
    # Per-row keys: the token at position t of sample j of prompt i is drawn with
    # fold_in(fold_in(fold_in(rng, i), j), t), i the prompt's global index (`prompt_index`), so a sample
    # does not depend on its row, its batch or the batch size. False: one key per step for the whole batch.
    # `generate_continuous` always uses per-row keys.
    row_keys: bool = False
    # The decode step's kernel: "model" = `qwen.forward` on one token per row; "weight_major" =
    # `models.decode` (weight-major copies made once per call: ~2x faster per step on the CPU, but the weights
    # are held twice while it runs); "auto" = "weight_major" on the CPU backend, "model" elsewhere.
    decode_impl: str = "auto"

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        if not self.greedy and self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0 (use greedy=True for argmax)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.slot_bucket < 0 or self.prefill_pack < 0:
            raise ValueError(f"slot_bucket={self.slot_bucket}, prefill_pack={self.prefill_pack}: must be >= 0")
        if self.decode_impl not in DECODE_IMPLS:
            raise ValueError(f"decode_impl={self.decode_impl!r}: expected one of {DECODE_IMPLS}")
        if self.top_k < 0 or self.num_samples < 1:
            raise ValueError(f"top_k={self.top_k}, num_samples={self.num_samples}: invalid")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


class SampleOutput(NamedTuple):
    tokens: jax.Array  # [N, max_new] int32; pad_token_id after a row's end. N = B * num_samples
    log_probs: jax.Array  # [N, max_new] float32 log-prob of each token under the sampling distribution; 0 after end
    lengths: jax.Array  # [N] int32 generated tokens, stop token included
    finish_reason: jax.Array  # [N] int32: FINISH_STOP or FINISH_LENGTH

    @property
    def mask(self) -> jax.Array:
        """[N, max_new] 1 on generated tokens (stop token included), 0 after."""
        return (jnp.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]).astype(jnp.int32)


def filter_logits(logits_bv: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus) on float32 logits; removed entries become -inf."""
    x = logits_bv.astype(jnp.float32) / cfg.temperature
    if cfg.top_k and cfg.top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, cfg.top_k)[0][:, -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    if cfg.top_p < 1.0:
        order = jnp.argsort(-x, axis=-1)
        sorted_x = jnp.take_along_axis(x, order, axis=-1)
        probs = jax.nn.softmax(sorted_x, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # keep a token while the mass before it < top_p
        keep_sorted = mass_before < cfg.top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(x.shape[0])[:, None], order].set(keep_sorted)
        x = jnp.where(keep, x, -jnp.inf)
    return x


def sample_logits(logits_bv: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """One token per row and its log-prob under the sampling distribution (see module docstring)."""
    if cfg.greedy:
        logp = jax.nn.log_softmax(logits_bv.astype(jnp.float32), axis=-1)
        token = jnp.argmax(logits_bv, axis=-1)
    else:
        logp = jax.nn.log_softmax(filter_logits(logits_bv, cfg), axis=-1)
        token = jax.random.categorical(rng, logp, axis=-1)
    return token.astype(jnp.int32), jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def row_keys(rng: jax.Array, prompt_index, sample_index, position) -> jax.Array:
    """[N] keys fold_in(fold_in(fold_in(rng, prompt), sample), position), one per row."""
    fold = lambda p, j, t: jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, p), j), t)  # noqa: E731
    return jax.vmap(fold)(prompt_index, sample_index, position)


def sample_logits_rows(logits_bv: jax.Array, keys_b: jax.Array, cfg: SamplingConfig):
    """`sample_logits` with one key per row: row b's draw depends only on its logits and keys_b[b]."""
    if cfg.greedy:
        return sample_logits(logits_bv, keys_b[0], cfg)
    logp = jax.nn.log_softmax(filter_logits(logits_bv, cfg), axis=-1)
    token = jax.vmap(lambda k, lp: jax.random.categorical(k, lp))(keys_b, logp).astype(jnp.int32)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


class Decoder(NamedTuple):
    """The LM head on hidden states [B, E] -> logits [B, V] (float32), and one decode step
    (token [B], position [B], mask [B], cache) -> (logits [B, V], cache)."""
    logits: object
    step: object


def resolved_decode_impl(impl: str) -> str:
    """`SamplingConfig.decode_impl` with "auto" resolved for the default backend."""
    if impl == "auto":
        return "weight_major" if jax.default_backend() == "cpu" else "model"
    return impl


def make_decoder(params, cfg: QwenConfig, impl: str, act: ActivationSharding | None, dw=None) -> Decoder:
    """The decode step of `SamplingConfig.decode_impl` (traced inside the sampler's jit, so the weight copies
    of "weight_major" are made once per call, before the loop, unless `dw` gives them)."""
    impl = resolved_decode_impl(impl)
    if impl == "weight_major":
        dw = decode.decode_weights(params, cfg) if dw is None else dw
        return Decoder(lambda hidden: decode.head_logits(dw, hidden),
                       lambda tok, pos, m, cache: decode.decode_step(dw, cfg, tok, pos, m, cache))
    head = qwen.lm_head_weight(params, cfg)  # hoisted: a tied head is transposed once, not every step

    def step(tok, pos, m, cache):
        hidden, cache = qwen.forward(params, cfg, tok[:, None], pos[:, None], m[:, None], cache, act=act)
        return qwen.lm_logits(params, cfg, hidden, act=act, head_ev=head)[:, 0], cache
    return Decoder(lambda hidden: qwen.lm_logits(params, cfg, hidden[:, None], act=act, head_ev=head)[:, 0], step)


def _is_stop(token, cfg: SamplingConfig):
    if not cfg.stop_token_ids:
        return jnp.zeros(token.shape, bool)
    return jnp.isin(token, jnp.asarray(cfg.stop_token_ids, jnp.int32))


def _prefill(params, cfg: QwenConfig, tokens, mask, chunk: int, act, positions=None, segments=None,
             all_hidden: bool = False):
    """Run the left-padded prompts [B, P] through the model in chunks of `chunk` tokens (the largest
    divisor of P that is <= chunk; a scan, so one chunk's program), writing a P-slot cache.
    positions [B, P]: RoPE positions (default: from the mask); segments [B, P]: sequence ids of packed rows
    (`_prefill_packed`). Returns the last position's hidden state [B, E] (every position's, [B, P, E], with
    `all_hidden`) and the cache."""
    b, p = tokens.shape
    c = max(d for d in range(1, min(chunk, p) + 1) if p % d == 0)
    positions = qwen.positions_from_mask(mask) if positions is None else positions
    cache = qwen.init_cache(cfg, b, p)._replace(index=jnp.zeros((), jnp.int32))  # every row at slot 0
    keep = (lambda h: h) if all_hidden else (lambda h: h[:, -1])  # noqa: E731
    pair = (lambda seg: None) if segments is None else (lambda seg: (seg, segments))  # noqa: E731
    if c == p:
        hidden, cache = qwen.forward(params, cfg, tokens, positions, mask, cache, act=act, segments=pair(segments))
        return keep(hidden), cache

    def step(cache, xs):
        tok, pos, m, *seg = xs
        hidden, cache = qwen.forward(params, cfg, tok, pos, m, cache, act=act, segments=pair(*seg) if seg else None)
        return cache, keep(hidden)

    split = lambda x: x.reshape(b, p // c, c).swapaxes(0, 1)  # noqa: E731 - [chunks, B, c]
    xs = (tokens, positions, mask) + (() if segments is None else (segments,))
    cache, out = jax.lax.scan(step, cache, tuple(map(split, xs)))
    return (out.swapaxes(0, 1).reshape(b, p, -1) if all_hidden else out[-1]), cache


def _prefill_packed(params, cfg: QwenConfig, tokens, mask, n: int, chunk: int, act):
    """`_prefill` of the left-padded prompts [B, P] with their real tokens packed into one row of `n` slots
    (n >= the batch's real tokens; each prompt attends only to itself, from position 0): the layers process
    n tokens instead of B * P. The packed cache is gathered back into the [B, P] left-padded layout (a
    padding slot holds some other token's key and value, masked as before). Returns what `_prefill` does."""
    b, p = tokens.shape
    real = mask.reshape(-1) > 0
    slot = jnp.cumsum(real.astype(jnp.int32)) - 1  # [B * P]: each real token's packed slot
    dest = jnp.where(real, slot, n)  # padding goes out of range: dropped
    pack = lambda x, fill: jnp.full((n,), fill, x.dtype).at[dest].set(x.reshape(-1), mode="drop")[None]  # noqa: E731
    seq = pack(jnp.repeat(jnp.arange(b, dtype=jnp.int32), p), -1)  # [1, n]: the prompt of each slot
    hidden, cache = _prefill(params, cfg, pack(tokens, 0), (seq >= 0).astype(jnp.int32), chunk, act,
                             positions=pack(qwen.positions_from_mask(mask), 0), segments=seq, all_hidden=True)
    src = jnp.where(mask > 0, slot.reshape(b, p), 0)  # [B, P]: the packed slot of each row slot
    k = tuple(jnp.moveaxis(x[0][:, :, src], 2, 0) for x in cache.k)  # [K, D, B, P] -> [B, K, D, P]
    v = tuple(jnp.moveaxis(x[0][:, src], 1, 0) for x in cache.v)  # [K, B, P, D] -> [B, K, P, D]
    return hidden[0, src[:, -1]], qwen.KVCache(k, v, mask > 0, jnp.asarray(p, jnp.int32))


def _expand(x, n: int, slot_axis: int, extra: int):
    """Repeat rows n times (sample copies of a prompt's cache) and append `extra` empty slots."""
    x = jnp.repeat(x, n, axis=0)
    pad = [(0, 0)] * x.ndim
    pad[slot_axis] = (0, extra)
    return jnp.pad(x, pad)


def segment_ends(max_new: int, bucket: int) -> list[int]:
    """Decode-loop segments: segment j runs the steps whose written slot is < P + ends[j]."""
    if bucket <= 0 or bucket >= max_new:
        return [max_new]
    return [min(e, max_new) for e in range(bucket, max_new + bucket, bucket)]


def _pad_slots(cache: qwen.KVCache, extra: int) -> qwen.KVCache:
    pad = lambda x, axis: jnp.pad(x, [(0, extra) if a == axis else (0, 0) for a in range(x.ndim)])  # noqa: E731
    return cache._replace(k=tuple(pad(x, 3) for x in cache.k), v=tuple(pad(x, 2) for x in cache.v),
                          valid=pad(cache.valid, 1))


@functools.partial(jax.jit, static_argnames=("cfg", "scfg", "act"))
def _generate(params, prompt_tokens, prompt_mask, rng, prompt_index, max_new, dw, *, cfg: QwenConfig,
              scfg: SamplingConfig, act: ActivationSharding | None):
    n = scfg.num_samples
    steps = scfg.max_new_tokens
    ends = segment_ends(steps, scfg.slot_bucket)
    dec = make_decoder(params, cfg, scfg.decode_impl, act, dw)
    # Prefill each distinct prompt once, into a prompt-sized cache, then give every sample its own copy
    # of that cache with room for the first segment's tokens.
    if scfg.prefill_pack:
        hidden_last, cache = _prefill_packed(params, cfg, prompt_tokens, prompt_mask.astype(jnp.int32),
                                             scfg.prefill_pack, scfg.prefill_chunk, act)
    else:
        hidden_last, cache = _prefill(params, cfg, prompt_tokens, prompt_mask.astype(jnp.int32), scfg.prefill_chunk,
                                      act)
    cache = qwen.KVCache(
        k=tuple(_expand(x, n, 3, ends[0]) for x in cache.k), v=tuple(_expand(x, n, 2, ends[0]) for x in cache.v),
        valid=_expand(cache.valid, n, 1, ends[0]), index=cache.index)  # index: a scalar, P for every row
    mask = jnp.repeat(prompt_mask, n, axis=0).astype(jnp.int32)
    b = mask.shape[0]
    logits = dec.logits(jnp.repeat(hidden_last, n, axis=0))
    prompt_len = mask.sum(axis=1)
    row_prompt = jnp.repeat(prompt_index.astype(jnp.int32), n)
    row_sample = jnp.tile(jnp.arange(n, dtype=jnp.int32), prompt_index.shape[0])

    def draw(logits, step):
        if scfg.row_keys:
            keys = row_keys(rng, row_prompt, row_sample, jnp.full((b,), step, jnp.int32))
            return sample_logits_rows(logits, keys, scfg)
        return sample_logits(logits, jax.random.fold_in(rng, step), scfg)

    token, logp = draw(logits, 0)
    out_tokens = jnp.full((b, steps), scfg.pad_token_id, jnp.int32).at[:, 0].set(token)
    out_logp = jnp.zeros((b, steps), jnp.float32).at[:, 0].set(logp)
    stopped = _is_stop(token, scfg)
    lengths = jnp.ones((b,), jnp.int32)

    def body(state):
        step, cache, token, stopped, lengths, out_tokens, out_logp = state
        done = stopped | (lengths >= max_new)
        logits, cache = dec.step(token, prompt_len + step - 1, jnp.ones((b,), jnp.int32), cache)
        new, logp = draw(logits, step)
        new = jnp.where(done, scfg.pad_token_id, new)
        logp = jnp.where(done, 0.0, logp)
        out_tokens = jax.lax.dynamic_update_slice(out_tokens, new[:, None], (0, step))
        out_logp = jax.lax.dynamic_update_slice(out_logp, logp[:, None], (0, step))
        lengths = lengths + (~done).astype(jnp.int32)
        stopped = stopped | (~done & _is_stop(new, scfg))
        return step + 1, cache, new, stopped, lengths, out_tokens, out_logp

    state = (jnp.asarray(1, jnp.int32), cache, token, stopped, lengths, out_tokens, out_logp)
    for j, end in enumerate(ends):
        if j:
            state = state[:1] + (_pad_slots(state[1], end - ends[j - 1]),) + state[2:]
        state = state[:1] + (qwen.KVCache(tuple(constrain(x, qwen.CACHE_AXES, act) for x in state[1].k),
                                          tuple(constrain(x, qwen.V_CACHE_AXES, act) for x in state[1].v),
                                          state[1].valid, state[1].index),) + state[2:]

        def cond(state, end=end):  # step s writes slot P + s - 1, which this segment's cache holds iff s <= end
            step, _, _, stopped, lengths, *_ = state
            return (step < steps) & (step <= end) & ~jnp.all(stopped | (lengths >= max_new))

        state = jax.lax.while_loop(cond, body, state)
    _, _, _, stopped, lengths, out_tokens, out_logp = state
    finish = jnp.where(stopped, FINISH_STOP, FINISH_LENGTH).astype(jnp.int32)
    return SampleOutput(out_tokens, out_logp, lengths, finish)


def _row_limits(max_new_rows, n_rows: int, scfg: SamplingConfig) -> jax.Array:
    if max_new_rows is None:
        return jnp.full((n_rows,), scfg.max_new_tokens, jnp.int32)
    limits = jnp.asarray(max_new_rows, jnp.int32)
    if limits.shape != (n_rows,):
        raise ValueError(f"max_new_rows has shape {limits.shape}, expected ({n_rows},): one limit per output row")
    return jnp.clip(limits, 1, scfg.max_new_tokens)


def generate(params, cfg: QwenConfig, prompt_tokens_bp, prompt_mask_bp, scfg: SamplingConfig,
             rng: jax.Array | None = None, act: ActivationSharding | None = None, prompt_index=None,
             max_new_rows=None, decode_weights=None) -> SampleOutput:
    """Sample `scfg.num_samples` continuations of each left-padded prompt row (see module docstring).

    prompt_index [B]: the prompts' global indices for per-row keys (`scfg.row_keys`; default 0..B-1).
    max_new_rows [B * num_samples]: optional per-row token budgets (<= max_new_tokens); a row that reaches
    its budget ends with FINISH_LENGTH. decode_weights: `decode.decode_weights(params, cfg)` kept by a caller
    whose weights do not change between calls (evaluation), for the "weight_major" decode step; without it
    each call makes that copy (~0.65 s for Qwen2.5-0.5B in float32 on a 2-core CPU)."""
    if rng is None:
        rng = jax.random.key(0)
    if prompt_tokens_bp.shape != prompt_mask_bp.shape or prompt_tokens_bp.ndim != 2:
        raise ValueError(f"prompt tokens {prompt_tokens_bp.shape} and mask {prompt_mask_bp.shape} must be equal [B, P]")
    if scfg.prefill_pack:
        try:
            n_real = int(np.asarray(prompt_mask_bp).astype(bool).sum())
        except jax.errors.TracerArrayConversionError:  # inside a caller's jit: the caller sized the pack
            n_real = 0
        if n_real > scfg.prefill_pack:
            raise ValueError(f"prefill_pack={scfg.prefill_pack} slots cannot hold the prompts' {n_real} tokens")
    b = prompt_tokens_bp.shape[0]
    prompt_index = jnp.arange(b, dtype=jnp.int32) if prompt_index is None else jnp.asarray(prompt_index, jnp.int32)
    limits = _row_limits(max_new_rows, b * scfg.num_samples, scfg)
    if resolved_decode_impl(scfg.decode_impl) != "weight_major":
        decode_weights = None
    return _generate(params, prompt_tokens_bp, prompt_mask_bp, rng, prompt_index, limits, decode_weights, cfg=cfg,
                     scfg=scfg, act=act)


def compile_count() -> int:
    """How many programs `_generate` has compiled in this process (for recompilation tests)."""
    return _generate._cache_size()


def prompt_bucket(longest: int, max_prompt_len: int, smallest: int = 16) -> int:
    """The prompt width for a batch whose longest prompt has `longest` tokens: the smallest bucket >= it
    among 2^k and 3 * 2^(k-1) (16, 24, 32, 48, 64, 96, 128, 192, ...: at most 1.5x the tokens needed, and a
    few compiled shapes), capped at `max_prompt_len`."""
    width = smallest
    while width < longest:
        width = width * 3 // 2 if width & (width - 1) == 0 else width * 4 // 3  # 2^k -> 1.5 * 2^k -> 2^(k+1)
    return min(width, max_prompt_len)


def pad_prompts(prompts: Sequence[Sequence[int]], max_prompt_len: int, batch_size: int | None = None,
                pad_token_id: int = 0, truncate: str = "error", fit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists into [batch_size, P] arrays: P = max_prompt_len (a fixed shape), or with `fit`
    the batch's `prompt_bucket` (its longest prompt rounded up to a bucket: the sampler's prefill and every
    decode step then work on the slots the batch needs, not on max_prompt_len).

    Rows beyond len(prompts) are all padding (mask 0). `truncate`: "error" raises on a prompt longer than
    `max_prompt_len`; "left" keeps its last max_prompt_len tokens.
    """
    batch_size = len(prompts) if batch_size is None else batch_size
    if len(prompts) > batch_size:
        raise ValueError(f"{len(prompts)} prompts do not fit a batch of {batch_size}")
    width = max_prompt_len
    if fit:
        width = prompt_bucket(max((len(p) for p in prompts), default=1), max_prompt_len)
    tokens = np.full((batch_size, width), pad_token_id, np.int32)
    mask = np.zeros((batch_size, width), np.int32)
    for i, p in enumerate(prompts):
        p = list(p)
        if len(p) > max_prompt_len:
            if truncate != "left":
                raise ValueError(f"prompt {i} has {len(p)} tokens, more than max_prompt_len={max_prompt_len}")
            p = p[-max_prompt_len:]
        if p:
            tokens[i, width - len(p):] = p
            mask[i, width - len(p):] = 1
    return tokens, mask
