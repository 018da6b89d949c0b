"""The one generation path: training rollouts, Math-Shepherd completions and evaluation all sample through
`Generator` (prompt ids in, samples out: the one place that pads prompts), which calls `generate` (the single
call of the sampler, so a new sampler is swapped in here; `generate_queue` is the continuous-batching engine),
and stop by one rule,
`stop_token_ids`; demonstrations are encoded with `end_token_id`, the token the policy ends a turn with.

The stop rule: the model config's eos ids, the tokenizer's eos, and `<|im_end|>` when prompts use the chat
format. A base tokenizer (Qwen3-4B-Base: eos `<|endoftext|>`) with chat prompts thus stops at the end of
the assistant turn, and its demonstrations end with `<|im_end|>` like the policy's turns.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from repirl_jax.generation import continuous, sampling
from repirl_jax.models import qwen
from repirl_jax.runtime.sharding import LOGICAL_AXIS_RULES, ActivationSharding, data_parallel_rules, tree_shardings

CHAT_END = "<|im_end|>"


def is_chat(prompt_format: str) -> bool:
    """Whether prompts are chat turns (config data.prompt_format chat_*)."""
    return prompt_format.startswith("chat")


def _token_id(tokenizer, token: str) -> int | None:
    convert = getattr(tokenizer, "convert_tokens_to_ids", None)
    tid = convert(token) if convert is not None else None
    if isinstance(tid, int) and tid >= 0 and tid != getattr(tokenizer, "unk_token_id", None):
        return tid
    return None


def stop_token_ids(cfg, tokenizer: Any, chat: bool) -> tuple[int, ...]:
    """End-of-turn ids: cfg.eos_token_id, the tokenizer's eos, and <|im_end|> with chat prompts (only ids
    inside the model's vocabulary)."""
    ids = set(getattr(cfg, "eos_token_id", ()) or ())
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    end = _token_id(tokenizer, CHAT_END) if chat else None
    if end is not None:
        ids.add(end)
    return tuple(sorted(i for i in ids if i < cfg.vocab_size))


def end_token_id(tokenizer: Any, chat: bool) -> int:
    """The token appended to demonstrations: <|im_end|> with chat prompts (where the tokenizer has it),
    else the tokenizer's eos (0 without a tokenizer)."""
    end = _token_id(tokenizer, CHAT_END) if chat and tokenizer is not None else None
    if end is not None:
        return end
    eos = getattr(tokenizer, "eos_token_id", None)
    return int(eos) if eos is not None else 0


def sampler_weights(cfg, mesh, mode: str):
    """(activation sharding, weight shardings or None, params -> sampler params) for rollout.weights = mode:
    "train" = the training arrays as they are (fsdp-sharded: every decode step gathers them); "replicated"
    = a full compute-dtype copy on every device (data-parallel decoding, no weight traffic per step);
    "tensor" = the copy sharded over the tensor axis only. The copy is made on the devices: cast on the
    shards first (elementwise, no communication), then a device-to-device reshard (a single jitted
    cast-and-gather would hold the whole model gathered in float32 as a temporary)."""

    act = ActivationSharding(mesh, data_parallel_rules()) if mode == "replicated" else ActivationSharding(mesh)
    if mode == "train":
        return act, None, lambda params: params
    abstract = qwen.abstract_params(cfg)
    if mode == "tensor":  # the rules table without fsdp: weights split over tensor only
        rules = tuple((k, None if k == "embed" else v) for k, v in LOGICAL_AXIS_RULES)
        target = tree_shardings(qwen.param_axes(cfg), abstract, mesh, rules)
    else:
        target = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), abstract)
    return act, target, lambda params: jax.device_put(qwen.inference_params(params, cfg), target)


def generate(params, cfg, tokens, mask, scfg: sampling.SamplingConfig, rng, act=None,
             rows: int = 0, decode_weights=None) -> sampling.SampleOutput:
    """Sample `scfg.num_samples` completions of each left-padded prompt row (device arrays [B, P]): one static
    batch, or with `rows` > 0 one queue decoded by continuous batching on `rows` cache rows.
    decode_weights: see `sampling.generate` (static batches)."""
    if rows:
        return generate_queue(params, cfg, tokens, mask, scfg, rng, rows, tokens.shape[0], act=act)
    return sampling.generate(params, cfg, tokens, mask, scfg, rng, act=act, decode_weights=decode_weights)


def generate_queue(params, cfg, tokens, mask, scfg: sampling.SamplingConfig, rng, rows: int, num_prompts: int,
                   act=None) -> sampling.SampleOutput:
    """Continuous batching (`continuous.generate`): all prompt rows [Q, P] form one queue decoded on `rows`
    cache rows, a finished row taking the next prompt; results in prompt order, keys per prompt index, so
    a sample does not depend on its slot or on `rows`. The first `num_prompts` rows are real."""
    return continuous.generate(params, cfg, tokens, mask, scfg, rng, act=act, rows=rows, num_prompts=num_prompts)


class Generator:
    """Token ids in, samples out: the one place that pads prompts and calls the sampler, for training rollouts,
    validation, Math-Shepherd's completions, `evaluate` and `make_experts` (through generation.TextGenerator).

        gen = Generator(cfg, max_prompt_len, pad_id, put=..., act=..., rows=0)
        out = gen(params, [prompt ids, ...], scfg, rng)      # a SampleOutput of device arrays

    A call pads its prompts (left) to their bucket (`sampling.prompt_bucket` of the longest, at most
    max_prompt_len; `width` fixes it), in a batch of `batch_size` rows (default: the prompts), places them with
    `put` (host arrays -> device arrays: the mesh's row sharding) and samples one static batch, or with
    `rows` > 0 one queue by continuous batching on that many cache rows. scfg carries the stop rule
    (`stop_token_ids`)."""

    def __init__(self, cfg, max_prompt_len: int, pad_id: int, put=None, act=None, rows: int = 0):
        self.cfg, self.max_prompt_len, self.pad_id = cfg, max_prompt_len, pad_id
        self.put = put or (lambda tree: tree)
        self.act, self.rows = act, rows

    def pad(self, prompts, batch_size: int | None = None, width: int | None = None):
        """[batch_size, P] host (tokens, mask); P = width, or the prompts' bucket. Longer prompts keep their end."""
        if width is not None:
            return sampling.pad_prompts(prompts, width, batch_size, self.pad_id, truncate="left")
        return sampling.pad_prompts(prompts, self.max_prompt_len, batch_size, self.pad_id, truncate="left", fit=True)

    def __call__(self, params, prompts, scfg: sampling.SamplingConfig, rng, batch_size: int | None = None,
                 width: int | None = None, decode_weights=None) -> sampling.SampleOutput:
        tokens, mask = self.pad(prompts, batch_size, width)
        tokens, mask = self.put((tokens, mask))
        if self.rows:
            return generate_queue(params, self.cfg, tokens, mask, scfg, rng, self.rows, len(prompts), act=self.act)
        return generate(params, self.cfg, tokens, mask, scfg, rng, act=self.act, decode_weights=decode_weights)


def response_ids(out, row: int) -> tuple[list[int], bool]:
    """(generated ids of `row` of a host-side SampleOutput, stop token included; whether it stopped)."""
    ids = np.asarray(out.tokens[row, :int(out.lengths[row])]).tolist()
    return ids, int(out.finish_reason[row]) == sampling.FINISH_STOP


def decode(tokenizer, out) -> list[str]:
    """Response texts of a host-side SampleOutput (the stop token removed, special tokens skipped)."""
    texts = []
    for row in range(out.tokens.shape[0]):
        ids, stopped = response_ids(out, row)
        texts.append(tokenizer.decode(ids[:-1] if stopped else ids, skip_special_tokens=True))
    return texts
