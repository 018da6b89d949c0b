"""Continuous batching: a fixed number of decode rows, refilled from a prompt queue as rows finish.

    out = continuous.generate(params, cfg, prompt_tokens_qp, prompt_mask_qp, scfg, rng, rows=16)

Same output contract as `sampling.generate` (a `SampleOutput` with N = Q * num_samples rows in prompt
order: sample j of prompt i is row i * num_samples + j), but the work is one jitted `lax.while_loop` over
`rows` cache rows. Whenever a row stops (stop token or budget) and the queue is not empty, the next
(prompt, sample) item is prefilled into that row of the cache and decoding goes on; the loop ends when
the queue is empty and every row has stopped. A static batch runs until its longest row ends, so with
long-tailed lengths most of its steps are padding; here a step is wasted only in the final tail.

Cache layout: each row is a ring of S = P + max_new slots, and every row writes step t's token at slot
t mod S (one in-place update for the whole batch). A prompt taking a row at step t0 is placed at slots
t0 - P .. t0 - 1 (mod S) and its response at t0, t0 + 1, ...: P + max_new slots, never overlapping.
Attention is over a row's valid slots, whose order does not matter (keys carry their RoPE position).
The samples of one prompt are consecutive items, so the prompt is prefilled once and its cache reused;
prompts are prefilled in blocks of ceil(rows / num_samples).

Keys: token t of sample j of prompt i is drawn with fold_in(fold_in(fold_in(rng, i), j), t) (see
`sampling.row_keys`), so a completion does not depend on its row, on `rows` or on the queue around it:
it equals `sampling.generate` with `SamplingConfig(row_keys=True)` and the same prompt index.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from repirl_jax.generation import sampling
from repirl_jax.models import qwen
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime.sharding import ActivationSharding


def _place_in_ring(x_row, p: int, s: int, start, axis: int):
    """A prompt-sized row [.., P, ..] (slot `axis`) as a ring row of S slots with slot i at (start + i) mod S."""
    pad = [(0, s - p) if a == axis else (0, 0) for a in range(x_row.ndim)]
    return jnp.roll(jnp.pad(x_row, pad), start, axis=axis)


@functools.partial(jax.jit, static_argnames=("cfg", "scfg", "rows", "act"))
def _generate(params, prompt_tokens, prompt_mask, rng, num_prompts, prompt_index, max_new, *, cfg: QwenConfig,
              scfg: sampling.SamplingConfig, rows: int, act: ActivationSharding | None):
    q_total, p = prompt_tokens.shape
    n, steps = scfg.num_samples, scfg.max_new_tokens
    n_all = q_total * n  # output rows; items >= n_items (padding prompts) are never started
    n_items = num_prompts * n
    s = p + steps
    b = rows
    dec = sampling.make_decoder(params, cfg, scfg.decode_impl, act)
    prompt_mask = prompt_mask.astype(jnp.int32)
    cache = qwen.init_cache(cfg, b, s)._replace(index=jnp.zeros((), jnp.int32))

    # Prompts are prefilled in blocks of g (enough for one fill of every row): a block's caches wait in the loop
    # state until its items take rows. One prompt at a time would run the prefill's products on a 1 x P
    # token matrix (about a third of the matmul rate of a block's on the CPU).
    g = max(1, -(-b // n))
    tokens_pad = jnp.pad(prompt_tokens, ((0, g), (0, 0)))  # a block starting at any prompt stays in bounds
    mask_pad = jnp.pad(prompt_mask, ((0, g), (0, 0)))

    def prefill(q):
        tok = jax.lax.dynamic_slice_in_dim(tokens_pad, q, g, axis=0)
        m = jax.lax.dynamic_slice_in_dim(mask_pad, q, g, axis=0)
        hidden, pc = sampling._prefill(params, cfg, tok, m, scfg.prefill_chunk, None)
        return q, hidden, pc.k, pc.v, pc.valid

    empty = qwen.init_cache(cfg, g, p)
    last0 = (jnp.asarray(-g - 1, jnp.int32), jnp.zeros((g, cfg.hidden_size), jnp.dtype(cfg.dtype)), empty.k,
             empty.v, empty.valid)

    def refill_cond(st):
        t, cache, item, gen, plen, token, nxt, last, outs = st
        return jnp.any(item >= n_all) & (nxt < n_items)

    def refill(st):
        """Prefill the next queue item into the first idle row (its first token is drawn here)."""
        t, cache, item, gen, plen, token, nxt, last, outs = st
        out_tokens, out_logp, lengths, finish = outs
        r = jnp.argmax(item >= n_all)
        q, j = nxt // n, nxt % n
        last = jax.lax.cond((q >= last[0]) & (q < last[0] + g), lambda: last, lambda: prefill(q))
        one = lambda x: jax.lax.dynamic_slice_in_dim(x, q - last[0], 1, axis=0)  # noqa: E731 - q's row of the block
        hidden, pk, pv, pvalid = one(last[1]), tuple(map(one, last[2])), tuple(map(one, last[3])), one(last[4])
        logits = dec.logits(hidden)
        keys = sampling.row_keys(rng, prompt_index[q][None], j[None], jnp.zeros((1,), jnp.int32))
        tok0, logp0 = sampling.sample_logits_rows(logits, keys, scfg)
        start = (t - p) % s
        put = lambda big, row, axis: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
            big, _place_in_ring(row, p, s, start, axis).astype(big.dtype), r, axis=0)
        cache = cache._replace(k=tuple(put(c, x, 3) for c, x in zip(cache.k, pk)),
                               v=tuple(put(c, x, 2) for c, x in zip(cache.v, pv)),
                               valid=put(cache.valid, pvalid, 1))
        out_tokens = out_tokens.at[nxt, 0].set(tok0[0])
        out_logp = out_logp.at[nxt, 0].set(logp0[0])
        stop0 = sampling._is_stop(tok0, scfg)[0]
        ends = stop0 | (max_new[nxt] <= 1)
        lengths = lengths.at[nxt].set(jnp.where(ends, 1, 0))
        finish = finish.at[nxt].set(jnp.where(stop0, sampling.FINISH_STOP, sampling.FINISH_LENGTH))
        item = item.at[r].set(jnp.where(ends, n_all, nxt))
        gen = gen.at[r].set(1)
        plen = plen.at[r].set(prompt_mask[q].sum())
        token = token.at[r].set(tok0[0])
        return t, cache, item, gen, plen, token, nxt + 1, last, (out_tokens, out_logp, lengths, finish)

    def decode(st):
        """One decode step of every row; idle rows compute and write nothing that is kept."""
        t, cache, item, gen, plen, token, nxt, last, outs = st
        out_tokens, out_logp, lengths, finish = outs
        active = item < n_all
        slot = t % s
        logits, cache = dec.step(token, plen + gen - 1, active.astype(jnp.int32), cache._replace(index=slot))
        safe = jnp.minimum(item, n_all - 1)
        keys = sampling.row_keys(rng, prompt_index[safe // n], safe % n, gen)
        new, logp = sampling.sample_logits_rows(logits, keys, scfg)
        out_tokens = out_tokens.at[item, gen].set(new, mode="drop")
        out_logp = out_logp.at[item, gen].set(logp, mode="drop")
        gen = gen + active.astype(jnp.int32)
        stop = sampling._is_stop(new, scfg)
        ends = active & (stop | (gen >= max_new[safe]))
        where_ends = jnp.where(ends, item, n_all)
        lengths = lengths.at[where_ends].set(gen, mode="drop")
        finish = finish.at[where_ends].set(jnp.where(stop, sampling.FINISH_STOP, sampling.FINISH_LENGTH),
                                           mode="drop")
        item = jnp.where(ends, n_all, item)
        return t + 1, cache, item, gen, plen, new, nxt, last, (out_tokens, out_logp, lengths, finish)

    def cond(st):
        return jnp.any(st[2] < n_all) | (st[6] < n_items)

    def body(st):
        st = jax.lax.while_loop(refill_cond, refill, st)
        return jax.lax.cond(jnp.any(st[2] < n_all), decode, lambda st: st, st)

    outs = (jnp.full((n_all, steps), scfg.pad_token_id, jnp.int32), jnp.zeros((n_all, steps), jnp.float32),
            jnp.zeros((n_all,), jnp.int32), jnp.full((n_all,), sampling.FINISH_LENGTH, jnp.int32))
    zeros = jnp.zeros((b,), jnp.int32)
    st = (jnp.asarray(p, jnp.int32), cache, jnp.full((b,), n_all, jnp.int32), zeros, zeros, zeros,
          jnp.asarray(0, jnp.int32), last0, outs)
    out_tokens, out_logp, lengths, finish = jax.lax.while_loop(cond, body, st)[-1]
    return sampling.SampleOutput(out_tokens, out_logp, lengths, finish)


def generate(params, cfg: QwenConfig, prompt_tokens_qp, prompt_mask_qp, scfg: sampling.SamplingConfig,
             rng: jax.Array | None = None, act: ActivationSharding | None = None, *, rows: int,
             num_prompts=None, prompt_index=None, max_new_rows=None) -> sampling.SampleOutput:
    """`scfg.num_samples` completions of each of the Q left-padded prompts, decoded on `rows` cache rows.

    num_prompts: how many leading prompts are real (a traced scalar: pad Q to a bucket and the program is
    compiled once per bucket; later rows come back empty, length 0). prompt_index [Q]: global prompt
    indices for the keys (default 0..Q-1). max_new_rows [Q * num_samples]: per-row budgets, as in
    `sampling.generate`."""
    if rng is None:
        rng = jax.random.key(0)
    if prompt_tokens_qp.shape != prompt_mask_qp.shape or prompt_tokens_qp.ndim != 2:
        raise ValueError(f"prompt tokens {prompt_tokens_qp.shape} and mask {prompt_mask_qp.shape} must be equal [Q, P]")
    if rows < 1:
        raise ValueError(f"rows={rows}: must be >= 1")
    q = prompt_tokens_qp.shape[0]
    num_prompts = q if num_prompts is None else num_prompts
    prompt_index = jnp.arange(q, dtype=jnp.int32) if prompt_index is None else jnp.asarray(prompt_index, jnp.int32)
    limits = sampling._row_limits(max_new_rows, q * scfg.num_samples, scfg)
    return _generate(params, prompt_tokens_qp, prompt_mask_qp, rng, jnp.asarray(num_prompts, jnp.int32),
                     prompt_index, limits, cfg=cfg, scfg=scfg, rows=rows, act=act)


def compile_count() -> int:
    return _generate._cache_size()
