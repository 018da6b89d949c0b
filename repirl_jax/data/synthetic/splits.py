"""Seeded, deduplicated train / validation / test splits of the task with their demonstrations."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from repirl_jax.data.synthetic.task import (
    DEFAULT_MAX_ADDEND,
    DEFAULT_MAX_FACTOR,
    DEFAULT_NUM_EXPERTS,
    DEFAULT_NUM_STEPS,
    DOMAIN,
    MODULUS,
    NOISE_KINDS,
    OPS,
    SPLITS,
    Chain,
    demonstration,
    sample_chain,
)

# --- splits ------------------------------------------------------------------------------------------

_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """The task configuration; `split(name)` builds that split (deterministic, cached per instance).

    num_steps: int or inclusive (lo, hi) range drawn per problem (metadata["difficulty"] = the drawn N).
    noise: fraction of demonstrations (Bernoulli per demonstration) with one slip, in `noise_splits` only."""
    seed: int = 0
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 500
    num_steps: int | tuple[int, int] = DEFAULT_NUM_STEPS
    num_experts: int = DEFAULT_NUM_EXPERTS
    noise: float = 0.0
    noise_splits: tuple[str, ...] = ("train",)
    noise_kind: str = "carried"
    modulus: int = MODULUS
    ops: str = OPS
    max_addend: int = DEFAULT_MAX_ADDEND
    max_factor: int = DEFAULT_MAX_FACTOR

    def __post_init__(self):
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise={self.noise}: expected a fraction in [0, 1]")
        if self.num_experts < 0:
            raise ValueError(f"num_experts={self.num_experts}: expected >= 0")
        if self.noise_kind not in NOISE_KINDS:
            raise ValueError(f"noise_kind={self.noise_kind!r}: expected one of {NOISE_KINDS}")
        bad = [s for s in self.noise_splits if s not in SPLITS]
        if bad:
            raise ValueError(f"noise_splits: unknown split(s) {bad}; expected {SPLITS}")
        object.__setattr__(self, "_cache", {})

    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def chain_kwargs(self) -> dict:
        return dict(modulus=self.modulus, ops=self.ops, max_addend=self.max_addend, max_factor=self.max_factor)

    def splits(self) -> dict[str, list[dict]]:
        cache = self._cache  # type: ignore[attr-defined]
        if not cache:
            seen: set[str] = set()
            for name in ("test", "val", "train"):  # fixed order: test/val do not depend on n_train
                cache[name] = self._build(name, seen)
        return {name: cache[name] for name in SPLITS}

    def split(self, name: str) -> list[dict]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}: expected one of {SPLITS}")
        return self.splits()[name]

    def _build(self, name: str, seen: set[str]) -> list[dict]:
        n = self.sizes()[name]
        code = _SPLIT_CODE[name]
        prob_rng = np.random.default_rng([int(self.seed), 0x5EED, code, 0])
        demo_rng = np.random.default_rng([int(self.seed), 0x5EED, code, 1])
        noise = self.noise if name in self.noise_splits else 0.0
        records, attempts = [], 0
        max_attempts = 50 * n + 1000
        while len(records) < n:
            attempts += 1
            if attempts > max_attempts:
                raise ValueError(f"split {name!r}: could only draw {len(records)} of {n} distinct problems "
                                 f"(the problem space at this difficulty is too small)")
            chain = sample_chain(prob_rng, self.num_steps, **self.chain_kwargs())
            if chain.prompt in seen:
                continue
            seen.add(chain.prompt)
            records.append(self._record(chain, name, len(records), demo_rng, noise))
        return records

    def _record(self, chain: Chain, split: str, i: int, rng: np.random.Generator, noise: float) -> dict:
        experts, errors = [], []
        for _ in range(self.num_experts):
            text, err = demonstration(chain, rng, noise, self.noise_kind)
            experts.append(text)
            errors.append(err)
        return {
            "id": f"arith-s{self.seed}-{split}-{i:06d}",
            "prompt": chain.prompt,
            "ground_truth": chain.answer,
            "experts": experts,
            "domain": DOMAIN,
            "metadata": {
                "split": split, "difficulty": chain.num_steps, "num_steps": chain.num_steps,
                "start": chain.start, "ops": [[op, b] for op, b in chain.ops], "values": chain.values,
                "modulus": chain.modulus, "expert_error_steps": errors,
                "reference": chain.expert_response(),
            },
        }


def make_splits(seed: int, n_train: int, n_val: int, n_test: int, **task: Any) -> dict[str, list[dict]]:
    """{"train": [...], "val": [...], "test": [...]} for `SyntheticTask(seed, n_train, n_val, n_test, **task)`.
    task: num_steps, num_experts, noise, noise_splits, noise_kind, modulus, ops, max_addend, max_factor."""
    if "num_steps" in task and isinstance(task["num_steps"], list):
        task["num_steps"] = tuple(task["num_steps"])
    return SyntheticTask(seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, **task).splits()
