"""Host-side batch layout shared by the trainer and the algorithms: the [prompt | response] rows, token
encoding of prompts and responses, padding."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from repirl_jax.errors import ConfigError

log = logging.getLogger(__name__)


class Traj(NamedTuple):
    """Trajectories in the [prompt | response] layout. N rows, P prompt slots, R response slots."""
    prompt: Any  # [N, P] int32, left-padded
    prompt_mask: Any  # [N, P] int32
    response: Any  # [N, R] int32, right-padded
    response_mask: Any  # [N, R] float32 (0 also on rows that are filtered out)


def take(traj: Traj, idx) -> Traj:
    return Traj(*(x[idx] for x in traj))


def stack_micro(tree, n_micro):
    """[rows, ...] -> [n_micro, rows / n_micro, ...] for the accumulation scan."""
    return jax.tree.map(lambda x: x.reshape((n_micro, x.shape[0] // n_micro) + x.shape[1:]), tree)


def encode_prompts(tokenizer, texts: Sequence[str], max_len: int, long_prompts: str):
    """Token ids per prompt; too-long prompts are truncated on the left or skipped (None), per config."""
    out, n_long = [], 0
    for t in texts:
        ids = tokenizer.encode(t, add_special_tokens=False)
        if len(ids) > max_len:
            n_long += 1
            ids = ids[-max_len:] if long_prompts == "truncate" else None
        out.append(ids)
    return out, n_long


def encode_responses(tokenizer, texts: Sequence[str], max_len: int, end_id: int):
    """Response ids + the end token (`rollout.end_token_id`: what the policy ends a turn with), cut to
    max_len (the cut is counted)."""
    out, n_cut = [], 0
    for t in texts:
        ids = tokenizer.encode(t, add_special_tokens=False) + [end_id]
        if len(ids) > max_len:
            n_cut += 1
            ids = ids[:max_len]
        out.append(ids)
    return out, n_cut


def pad_right(seqs: Sequence[Sequence[int]], length: int, pad_id: int = 0):
    tokens = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.float32)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return tokens, mask


def tokenize_set(tokenizer, records: list[dict], name: str, max_prompt_len: int, max_response_len: int, k: int,
                 end_id: int, long_prompts: str, experts_required_by: str | None, report: dict) -> list[dict]:
    """Records with "prompt_ids" and k "expert_ids" (demonstrations cycled to k, each + end_id); prompts
    longer than max_prompt_len skipped or truncated (long_prompts). Counts go to `report` as name_*.
    experts_required_by: the algo name when every prompt must have demonstrations (else None)."""
    prompt_ids, n_long = encode_prompts(tokenizer, [r["prompt"] for r in records], max_prompt_len, long_prompts)
    kept, n_cut = [], 0
    for rec, ids in zip(records, prompt_ids):
        if ids is None:
            continue
        experts = []
        if k and rec.get("experts"):
            ex = [rec["experts"][j % len(rec["experts"])] for j in range(k)]
            experts, cut = encode_responses(tokenizer, ex, max_response_len, end_id)
            n_cut += cut
        kept.append({**rec, "prompt_ids": ids, "expert_ids": experts})
    report.update({f"{name}_prompts": len(records), f"{name}_long_prompts": n_long,
                   f"{name}_prompts_skipped": len(records) - len(kept), f"{name}_expert_responses_cut": n_cut})
    if n_long:
        log.warning("%s: %d prompts longer than max_prompt_len=%d were %s", name, n_long, max_prompt_len,
                    "truncated" if long_prompts == "truncate" else "skipped")
    if not kept:
        raise ConfigError(f"{name}: no usable prompts (all longer than rollout.max_prompt_len={max_prompt_len}?)")
    if name == "train" and experts_required_by and k and any(not r["expert_ids"] for r in kept):
        missing = sum(not r["expert_ids"] for r in kept)
        raise ConfigError(f"{name}: {missing} prompts have no expert demonstrations; algo={experts_required_by} "
                          "needs them")
    return kept
