"""Text in, completions out for evaluation: tokenise prompts, batch them into shape buckets, sample
through `rollout.Generator` with `rollout.stop_token_ids` (the training rollouts' path and stop rule), decode.
Every call runs batches of exactly `batch_size` prompts, each left-padded to its longest prompt rounded up
to a bucket (`sampling.prompt_bucket`, at most `max_prompt_len`), so the sampler compiles once per
(batch_size, bucket, SamplingConfig) and works on the prompt slots the batch needs. A batch whose bucket is
one step below a width this generator already sampled at (same SamplingConfig) takes that width instead: it
prefills at most 1.5x its slots rather than compiling another program. On one device (or a mesh that does
not split rows) the prefill packs a batch's real tokens into one row (`SamplingConfig.prefill_pack`, its
size bucketed the same way) when that row is at most PACK_MAX_SLOTS and 80% of the padded batch's slots:
ragged chat prompts leave ~half of a padded batch's slots empty. Where the decode step is "weight_major" (the
CPU) and the model sits on one device, the weight-major copy of the weights is made once and kept (the
weights do not change between calls), not once per batch.
With `continuous=True` all prompts of a call form one queue decoded by `continuous.generate` on
`batch_size` rows (a finished row takes the next prompt), padded to a multiple of `batch_size` prompts
so the program compiles once per queue bucket; keys are per prompt (its index in the call).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from repirl_jax.generation import rollout, sampling
from repirl_jax.models import decode
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime.sharding import ActivationSharding


# The packed row's attention spans all its slots (n^2 scores per layer): at 1,024 slots it adds ~17% to the
# prefill of Qwen2.5-0.5B on the CPU (6.3 s against 5.4 s for 1,024 tokens in rows of 192); longer rows pad.
PACK_MAX_SLOTS = 1024


@dataclasses.dataclass
class Completion:
    text: str
    token_ids: list[int]
    log_probs: list[float]
    finish_reason: str  # "stop" | "length"


class TextGenerator:
    """Batches prompts into fixed buckets and returns decoded completions."""

    def __init__(self, params, cfg: QwenConfig, tokenizer, max_prompt_len: int, batch_size: int,
                 mesh: Mesh | None = None, long_prompts: str = "truncate", continuous: bool = False):
        if len(tokenizer) > cfg.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                             f"{cfg.vocab_size}: wrong tokenizer for this checkpoint?")
        if long_prompts not in ("truncate", "error"):
            raise ValueError(f"long_prompts={long_prompts!r}: expected truncate or error")
        self.params, self.cfg, self.tokenizer = params, cfg, tokenizer
        self.max_prompt_len, self.batch_size, self.mesh = max_prompt_len, batch_size, mesh
        self.long_prompts = long_prompts
        self.continuous = continuous
        self.act = ActivationSharding(mesh) if mesh is not None else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Prompts are chat turns when the tokenizer has a chat template (benchmarks.build_prompt).
        self.stop_ids = rollout.stop_token_ids(cfg, tokenizer, chat=bool(getattr(tokenizer, "chat_template", None)))
        self.truncated = 0  # prompts cut to their last max_prompt_len tokens so far
        self._sampled: dict[tuple, set[int]] = {}  # prompt widths (packed prefill sizes) sampled at, per config
        rows_split = mesh is not None and mesh.shape["data"] * mesh.shape["fsdp"] > 1
        self.pack = not continuous and not rows_split
        self._decode_weights = None  # the weight-major copy, once made (see module docstring)
        self.keep_decode_weights = not continuous and (mesh is None or mesh.size == 1)
        put = (lambda t: tuple(jnp.asarray(x) for x in t)) if continuous else (lambda t: tuple(map(self._put, t)))
        self.generator = rollout.Generator(cfg, max_prompt_len, self.pad_id, put=put, act=self.act,
                                           rows=batch_size if continuous else 0)

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]

    def _put(self, x: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.device_put(x, NamedSharding(self.mesh, P(("data", "fsdp"))))

    def generate(self, prompts: Sequence[str], scfg: sampling.SamplingConfig, rng: jax.Array,
                 on_batch: Callable[[int], None] | None = None) -> list[list[Completion]]:
        """`scfg.num_samples` completions per prompt, in prompt order. `on_batch(n_prompts)` after each batch."""
        scfg = dataclasses.replace(scfg, stop_token_ids=scfg.stop_token_ids or self.stop_ids,
                                   pad_token_id=self.pad_id)
        ids = self.encode(prompts)
        for i, p in enumerate(ids):
            if len(p) > self.max_prompt_len:
                if self.long_prompts == "error":
                    raise ValueError(f"prompt {i} has {len(p)} tokens, more than max_prompt_len={self.max_prompt_len}")
                self.truncated += 1
        out: list[list[Completion]] = []
        if self.continuous and ids:  # one queue, padded to a multiple of batch_size prompts
            q = -(-len(ids) // self.batch_size) * self.batch_size
            res = self.generator(self.params, ids, scfg, rng, batch_size=q)
            out = self._completions(res, len(ids), scfg.num_samples)
            if on_batch:
                on_batch(len(ids))
            return out
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start:start + self.batch_size]
            width, pack = self._shape(chunk, scfg)
            res = self.generator(self.params, chunk, dataclasses.replace(scfg, prefill_pack=pack),
                                 jax.random.fold_in(rng, start), batch_size=self.batch_size, width=width,
                                 decode_weights=self._weight_major(scfg))
            out.extend(self._completions(res, len(chunk), scfg.num_samples))
            if on_batch:
                on_batch(len(chunk))
        return out

    def _shape(self, prompts: Sequence[Sequence[int]], scfg: sampling.SamplingConfig) -> tuple[int, int]:
        """(prompt width, packed prefill slots or 0) of a batch: each its bucket, or the bucket one step up
        where this generator has sampled at that size with `scfg` and not at its own (one compiled program
        instead of two)."""
        own = sampling.prompt_bucket(max(len(p) for p in prompts), self.max_prompt_len)
        width = self._reuse(("width", scfg), own, sampling.prompt_bucket(own + 1, self.max_prompt_len))
        own = sampling.prompt_bucket(sum(min(len(p), width) for p in prompts), PACK_MAX_SLOTS + 1)
        if not self.pack or own > PACK_MAX_SLOTS or own > 0.8 * self.batch_size * width:
            return width, 0
        return width, self._reuse(("pack", scfg, width), own, sampling.prompt_bucket(own + 1, PACK_MAX_SLOTS))

    def _weight_major(self, scfg: sampling.SamplingConfig):
        """The kept weight-major copy of the weights, made at the first call that decodes with it; else None."""
        if not self.keep_decode_weights or sampling.resolved_decode_impl(scfg.decode_impl) != "weight_major":
            return None
        if self._decode_weights is None:
            self._decode_weights = jax.jit(decode.decode_weights, static_argnums=1)(self.params, self.cfg)
        return self._decode_weights

    def _reuse(self, key: tuple, own: int, up: int) -> int:
        done = self._sampled.setdefault(key, set())
        size = up if up in done and own not in done else own
        done.add(size)
        return size

    def _completions(self, res: sampling.SampleOutput, n_prompts: int, n: int) -> list[list[Completion]]:
        res = sampling.SampleOutput(*(np.asarray(x) for x in res))
        texts, out = rollout.decode(self.tokenizer, res), []
        for i in range(n_prompts):
            row = []
            for r in range(i * n, (i + 1) * n):
                t, stopped = rollout.response_ids(res, r)
                row.append(Completion(text=texts[r], token_ids=t, log_probs=res.log_probs[r, :len(t)].tolist(),
                                      finish_reason="stop" if stopped else "length"))
            out.append(row)
        return out
