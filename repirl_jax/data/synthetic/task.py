"""The task: chains of operations, the expert and its noisy demonstrations, answers and scores."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

MODULUS = 100
OPS = "+-*"
DEFAULT_NUM_STEPS = 4
DEFAULT_NUM_EXPERTS = 4
DEFAULT_MAX_ADDEND = 19
DEFAULT_MAX_FACTOR = 9
DOMAIN = "synthetic_arith"
SPLITS = ("train", "val", "test")

_STEP_RE = re.compile(r"(\d{1,9})([+\-*])(\d{1,9})=(\d{1,9})")
_ANSWER_RE = re.compile(r"#(\d{1,9})")
_PROMPT_RE = re.compile(r"(\d{1,9})((?:[+\-*]\d{1,9})+)=\?\n?")
_OP_RE = re.compile(r"([+\-*])(\d{1,9})")


def apply_op(op: str, a: int, b: int, modulus: int = MODULUS) -> int:
    if op == "+":
        return (a + b) % modulus
    if op == "-":
        return (a - b) % modulus
    if op == "*":
        return (a * b) % modulus
    raise ValueError(f"unknown operation {op!r}: expected one of {OPS!r}")


# --- problems ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Chain:
    """One problem: `start`, then `ops` = ((op, operand), ...) applied left to right modulo `modulus`."""
    start: int
    ops: tuple[tuple[str, int], ...]
    modulus: int = MODULUS

    @property
    def num_steps(self) -> int:
        return len(self.ops)

    @property
    def width(self) -> int:
        """Every number is written with exactly this many digits (zero-padded): len(str(modulus - 1))."""
        return number_width(self.modulus)

    def fmt(self, v: int) -> str:
        return str(v).zfill(self.width)

    @property
    def values(self) -> list[int]:
        """v[0] = start, v[i+1] = v[i] op[i] b[i] (mod modulus); N + 1 values."""
        vals = [self.start]
        for op, b in self.ops:
            vals.append(apply_op(op, vals[-1], b, self.modulus))
        return vals

    @property
    def answer(self) -> str:
        return self.fmt(self.values[-1])

    @property
    def prompt(self) -> str:
        return self.fmt(self.start) + "".join(op + self.fmt(b) for op, b in self.ops) + "=?\n"

    def expert_items(self) -> list[str]:
        """The expert's N step lines followed by its answer line."""
        return _render_items(self, self.values)

    def expert_response(self) -> str:
        return "\n".join(self.expert_items())


def number_width(modulus: int) -> int:
    return len(str(int(modulus) - 1))


def parse_prompt(prompt: str, modulus: int = MODULUS) -> Chain:
    """The chain of a task prompt ("47*08-35+62=?\\n"); ValueError if it is not one (every number must have
    exactly number_width(modulus) digits)."""
    m = _PROMPT_RE.fullmatch(prompt.strip() + "\n") if isinstance(prompt, str) else None
    if m is None:
        raise ValueError(f"not a synthetic arithmetic prompt: {prompt!r} (expected e.g. '47*08-35+62=?\\n')")
    ops = _OP_RE.findall(m.group(2))
    w = number_width(modulus)
    if any(len(x) != w for x in [m.group(1)] + [b for _, b in ops]):
        raise ValueError(f"prompt {prompt!r}: every number must have exactly {w} digits (modulus {modulus})")
    return Chain(int(m.group(1)), tuple((op, int(b)) for op, b in ops), modulus)


def _as_rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, Sequence, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng: expected a numpy Generator, a seed or None, got {type(rng).__name__}")


def _draw_num_steps(num_steps: int | Sequence[int], rng: np.random.Generator) -> int:
    if isinstance(num_steps, (int, np.integer)):
        n = int(num_steps)
    else:
        lo, hi = (int(x) for x in num_steps)
        if lo > hi:
            raise ValueError(f"num_steps range {num_steps!r}: lo > hi")
        n = int(rng.integers(lo, hi + 1))
    if n < 1:
        raise ValueError(f"num_steps must be >= 1, got {n}")
    return n


def sample_chain(rng: Any, num_steps: int | Sequence[int] = DEFAULT_NUM_STEPS, *, modulus: int = MODULUS,
                 ops: str = OPS, max_addend: int = DEFAULT_MAX_ADDEND,
                 max_factor: int = DEFAULT_MAX_FACTOR) -> Chain:
    """A random chain. `num_steps`: an int or an inclusive (lo, hi) range."""
    rng = _as_rng(rng)
    if not ops or any(o not in OPS for o in ops):
        raise ValueError(f"ops={ops!r}: expected a non-empty subset of {OPS!r}")
    if not (modulus >= 3 and 1 <= max_addend < modulus and 2 <= max_factor < modulus):
        raise ValueError(f"need modulus >= 3, 1 <= max_addend < modulus, 2 <= max_factor < modulus (got "
                         f"modulus={modulus}, max_addend={max_addend}, max_factor={max_factor})")
    n = _draw_num_steps(num_steps, rng)
    start = int(rng.integers(0, modulus))
    steps = []
    for _ in range(n):
        op = ops[int(rng.integers(len(ops)))]
        b = int(rng.integers(2, max_factor + 1)) if op == "*" else int(rng.integers(1, max_addend + 1))
        steps.append((op, b))
    return Chain(start, tuple(steps), modulus)


# --- the expert --------------------------------------------------------------------------------------

def expert_response(chain: Chain) -> str:
    """The correct solution: one line per step, then "#answer"."""
    return chain.expert_response()


def _wrong_value(true: int, rng: np.random.Generator, modulus: int) -> int:
    """A plausible wrong result: a near miss (+-1, +-2, +-10) or a uniformly random other value."""
    for _ in range(100):
        if rng.random() < 0.6:
            w = (true + int(rng.choice([-10, -2, -1, 1, 2, 10]))) % modulus
        else:
            w = int(rng.integers(0, modulus))
        if w != true:
            return w
    return (true + 1) % modulus


def _continue(chain: Chain, j: int, wrong: int) -> list[int]:
    """Values of a trace that states `wrong` as the result of step j and continues consistently."""
    vals = chain.values[:j + 1] + [wrong]
    for op, b in chain.ops[j + 1:]:
        vals.append(apply_op(op, vals[-1], b, chain.modulus))
    return vals


def _render_items(chain: Chain, vals: Sequence[int]) -> list[str]:
    f = chain.fmt
    return [f"{f(vals[i])}{op}{f(b)}={f(vals[i + 1])}" for i, (op, b) in enumerate(chain.ops)] + [f"#{f(vals[-1])}"]


def _render(chain: Chain, vals: Sequence[int]) -> str:
    return "\n".join(_render_items(chain, vals))


def noisy_response(chain: Chain, rng: Any, step: int | None = None) -> tuple[str, int]:
    """A solution with exactly one slip (at `step`, or a uniformly drawn step) continued consistently, whose
    final answer is wrong. Returns (response, index of the slipped step)."""
    rng = _as_rng(rng)
    n = chain.num_steps
    j = int(rng.integers(n)) if step is None else int(step)
    if not 0 <= j < n:
        raise ValueError(f"step={step}: expected 0..{n - 1}")
    true_final = chain.values[-1]
    for _ in range(20):
        vals = _continue(chain, j, _wrong_value(chain.values[j + 1], rng, chain.modulus))
        if vals[-1] != true_final:  # never re-merged with the true chain
            return _render(chain, vals), j
    if step is not None:
        # try every wrong value before giving up on the requested step
        for w in range(chain.modulus):
            if w != chain.values[j + 1]:
                vals = _continue(chain, j, w)
                if vals[-1] != true_final:
                    return _render(chain, vals), j
        raise ValueError(f"no wrong value at step {j} of {chain} changes the final answer")
    j = n - 1  # a slip in the last step can never re-merge
    return _render(chain, _continue(chain, j, _wrong_value(chain.values[j + 1], rng, chain.modulus))), j


def corrected_response(chain: Chain, rng: Any, step: int | None = None) -> tuple[str, int]:
    """A solution with one slip that is corrected at once: at step j (drawn uniformly, or `step`) the line
    states a wrong result, the next line redoes step j correctly (same left side, right result), and the
    rest is the expert's. The final answer is right; `label_steps` marks the slipped line (item j) wrong and
    every other item correct. Returns (response, j)."""
    rng = _as_rng(rng)
    n = chain.num_steps
    j = int(rng.integers(n)) if step is None else int(step)
    if not 0 <= j < n:
        raise ValueError(f"step={step}: expected 0..{n - 1}")
    vals = chain.values
    items = chain.expert_items()
    op, b = chain.ops[j]
    f = chain.fmt
    wrong = f"{f(vals[j])}{op}{f(b)}={f(_wrong_value(vals[j + 1], rng, chain.modulus))}"
    return "\n".join(items[:j] + [wrong] + items[j:]), j


NOISE_KINDS = ("corrected", "carried")


def demonstration(chain: Chain, rng: Any = None, noise: float = 0.0, kind: str = "carried") -> tuple[str, int | None]:
    """An expert demonstration: with probability `noise` an imperfect one -- kind "carried": a
    `noisy_response` (one slip continued consistently, wrong answer); "corrected": a `corrected_response`
    (one slip redone on the next line, right answer) -- returning its slipped item index; else the correct
    solution (returns None)."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise={noise}: expected a fraction in [0, 1]")
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind={kind!r}: expected one of {NOISE_KINDS}")
    if noise == 0.0:
        return chain.expert_response(), None
    rng = _as_rng(rng)
    if rng.random() < noise:
        return (corrected_response if kind == "corrected" else noisy_response)(chain, rng)
    return chain.expert_response(), None


def instruction(modulus: int = MODULUS, ops: str = OPS) -> str:
    """What a chat model reads after a problem (config data.prompt_format=chat_synthetic): the rules and one
    worked example in the expert's format, at this modulus and with these operations."""
    ex = Chain(47 % modulus, tuple((op, b) for op, b in zip((ops * 2)[:2], (8, 5))), modulus)
    wrap = Chain(5 % modulus, (("-", 8 % modulus),), modulus)
    digits = f"{ex.width} digits" if ex.width > 1 else "1 digit"
    return (f"Apply the operations from left to right, one per line, taking every result modulo {modulus} (so "
            f"{wrap.expert_items()[0]}). Write every number with exactly {digits} and end with a line that "
            f"is # followed by the final value. For example, for {ex.prompt.strip()} write:\n"
            f"{ex.expert_response()}")


# --- scoring -----------------------------------------------------------------------------------------

def extract_answer(response: Any) -> str | None:
    """The digits of the final answer line ("#<digits>" as the last non-empty line), or None."""
    if not isinstance(response, str):
        return None
    lines = [ln.strip() for ln in response.split("\n") if ln.strip()]
    if not lines:
        return None
    m = _ANSWER_RE.fullmatch(lines[-1])
    return m.group(1) if m else None


def score(response: Any, ground_truth: Any) -> float:
    """1.0 iff the response's last non-empty line is exactly "#" + ground_truth (stripped), else 0.0."""
    try:
        got = extract_answer(response)
        return 1.0 if got is not None and got == str(ground_truth).strip() else 0.0
    except Exception:  # noqa: BLE001 -- a reward never raises on garbage
        return 0.0
