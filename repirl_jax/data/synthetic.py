"""A synthetic multi-step arithmetic task with verifiable answers and known step-level correctness.

Task
----
A problem is a chain: a start value and N operations, applied LEFT TO RIGHT (no precedence), every result
taken modulo `modulus` (default 100, so every value is in 0..99 and "05-08=97", "47*08=76" are correct).
Every number is written with exactly number_width(modulus) = len(str(modulus - 1)) digits, zero-padded
(2 at the default), so lines have a fixed layout -- a tiny model then learns to copy operands from the
prompt quickly and its mistakes are arithmetic ones:

    prompt    "47*08-15+12=?\\n"                            (the text the policy sees; the response follows)
    response  "47*08=76\\n76-15=61\\n61+12=73\\n#73"        (one step per line, then the answer line)
    answer    "73"                                         (the ground truth, in the same fixed width)

Step i (0-based) of the expert is the line f"{v[i]}{op[i]}{b[i]}={v[i+1]}" (each number zero-padded) where
v[0] is the start value and v[i+1] = (v[i] op[i] b[i]) mod modulus; the answer line is f"#{v[N]}". There are
no spaces and no trailing newline (the end-of-sequence token follows the answer line).

Difficulty: `num_steps` N (an int, or a (lo, hi) range drawn uniformly per problem, inclusive; the drawn N
is metadata["difficulty"]) and operand sizes: "+" and "-" take operands in 1..max_addend (default 19), "*"
takes 2..max_factor (default 9), the start value is in 0..modulus-1. Sizes at the default (modulus 100):
prompt = 3N + 5 tokens, response = 9N + 3 tokens (+1 eos), i.e. 17 and 39 (+1) at N = 4.
Calibration (single runs on 2 shared CPU cores, not tests): a 0.74M-parameter Qwen2 (hidden 128, 3 layers,
vocab 32), behaviour-cloned on one demonstration each of 2000 default problems for 1200 steps of batch 32
(~5.5 minutes), greedy-answers 57% of 300 test problems; its per-step accuracy (given its own carried
value) is ~97% on "+" and "-" but ~57% on "*", so errors are mostly multiplications. With max_addend=99
(1000 problems, same budget) it answered ~10%; with max_addend=9, max_factor=5 its training loss fell to
~1e-3 (near perfect). Fewer BC steps or more steps N lower the accuracy.

Expert
------
`expert_response(chain)` writes the correct solution. `demonstration(chain, rng, noise, kind)`: with
probability `noise` (independently per demonstration) the demonstration is imperfect. kind "corrected"
(`corrected_response`, the demo's default since issue 11): at a step j the line states a wrong result and
the NEXT line redoes step j correctly (same left side), so the answer is right but one line is wrong and
the response is one line longer. kind "carried" (`noisy_response`): exactly ONE arithmetic slip:
at a step j drawn uniformly from 0..N-1 the stated result is a wrong value (a near miss +-1, +-2, +-10 or a
uniformly random other value), and every later line continues CONSISTENTLY from the wrong value (later
steps are arithmetically right given their left side, the answer line repeats the last stated value). The
wrong value is chosen so that the chain never re-merges with the true one (multiplication mod 100 can map
two values to one), so the final answer of a noisy demonstration is always wrong and `label_steps` reports
first_error == j. With noise 0 every demonstration is the exact expert solution.

Step correctness (`label_steps`) -- the "true chain" definition
--------------------------------------------------------------
The response is split on "\\n" into items (the characters between newlines; a single trailing newline does
not start a new item; "" has no items). Every item is a step, the answer line included. The expert's items
are its N step lines followed by its answer line (N + 1 items).

    item i is CORRECT  iff  p(i) < N + 1 and the item text equals the expert's item p(i) exactly,

where p(i) is the item's position: p(0) = 0, and p advances by one after every item except a RETRACTED
attempt -- a step line followed by a step line with the same left side (a<op>b) but a different result,
i.e. a correction; the redo is then judged against the same expert item. Without retractions p(i) = i.

So a step is correct iff it applies the chain's i-th operation with the right operand to the TRUE value
v[i] and states the TRUE result v[i+1] in canonical form (fixed width, no spaces), and the answer line is
correct iff it is item N and states v[N]. Consequences:
a step whose left side carries a wrong value is wrong, so after a slip that the trace carries on
consistently every later step is wrong (they are judged against the true chain, not the trace's own
values); a malformed line (garbage, blank line in the middle, spaces, "#" line too early) is wrong; extra
steps beyond N are wrong (item N must be the answer line), as is anything after the answer line; a
truncated trace has fewer items -- the missing ones are not labelled (`complete` is False), so a
correct-so-far prefix has first_error None. `first_error` is the index of the first wrong item or None.
Each item also gets `locally_valid` (consistency with the trace itself, see `Step`), which is the notion
under which a noisy demonstration has exactly one bad step. The chain is parsed from the prompt; pass
`modulus=` (metadata["modulus"]) when the task does not use the default 100. `token_step_labels` maps the
items onto response tokens (each item's terminating newline belongs to it) and `per_step` reduces
per-token values (e.g. PRM rewards) to one value per item for a step-error AUROC.

Scoring: `score(response, ground_truth)` is 1.0 iff the last non-empty line of the response, stripped, is
exactly "#" + ground_truth; else 0.0 (never raises).

Tokenizer: `CharTokenizer`, one id per character (so character spans ARE token spans), 29 ids including
the specials <pad>=0, <eos>=1, <bos>=2, <unk>=3. It duck-types the parts of a HuggingFace tokenizer the
project uses.

Splits: `make_splits(seed, n_train, n_val, n_test, **task)` (or `SyntheticTask(...).split(name)`) returns
records {"id", "prompt", "ground_truth", "experts", "domain", "metadata"} (the shape of
`data.prompts.load_prompt_set`). Test is drawn first, then validation, then train, each from its own
seeded stream and deduplicated by prompt against everything drawn before, so the test set does not change
when n_train or n_val change, and no two records (within or across splits) share a prompt. `noise` applies
to the splits in `noise_splits` (default: train only), so evaluation demonstrations stay clean.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Sequence

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


# --- step labels -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One item (line) of a response. `start`/`end`: character span in the response, end exclusive, the
    terminating newline excluded. `kind`: "step" (a well-formed `a<op>b=c` line), "answer" ("#<digits>")
    or "malformed". `correct`: equals the expert's item at this index (see module docstring). `expected`:
    the expert's item at this index (None past the end). `locally_valid`: consistent with the trace itself:
    a well-formed step line at index i < N with the chain's i-th operation and operand, whose left value is
    the value carried from the previous item (the start value for i = 0; the result stated by item i-1,
    which must be a well-formed step line) and whose result is arithmetically right (mod modulus); or an
    answer line at index N repeating the result stated by item N-1. Malformed items are never valid."""
    index: int
    text: str
    start: int
    end: int
    kind: str
    correct: bool
    expected: str | None
    locally_valid: bool


@dataclasses.dataclass(frozen=True)
class StepLabels:
    steps: list[Step]
    first_error: int | None  # index of the first item that is not correct, or None
    num_expected: int  # N + 1: the expert's step lines plus its answer line
    complete: bool  # the response has at least N + 1 items (nothing is missing)
    answer: str | None  # the final answer as `score` reads it (None if the last line is no answer line)

    @property
    def correct(self) -> list[bool]:
        return [s.correct for s in self.steps]

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in self.steps]

    @property
    def all_correct(self) -> bool:
        """The response is exactly the expert solution (item by item)."""
        return self.first_error is None and len(self.steps) == self.num_expected

    def __len__(self) -> int:
        return len(self.steps)


def split_items(response: str) -> list[tuple[str, int, int]]:
    """(text, start, end) of each item: the pieces between newlines; one trailing newline adds no item."""
    items, pos = [], 0
    pieces = response.split("\n")
    if pieces and pieces[-1] == "":
        pieces = pieces[:-1]
    for p in pieces:
        items.append((p, pos, pos + len(p)))
        pos += len(p) + 1
    return items


def _retracted(items: Sequence[tuple[str, int, int]]) -> list[bool]:
    """Item i is a RETRACTED attempt iff it is a well-formed step line and the next item is a step line with
    the same left side (a<op>b) but a different stated result: the trace redoes that step (a correction)."""
    out = []
    for i, (text, _, _) in enumerate(items):
        ms = _STEP_RE.fullmatch(text)
        nxt = _STEP_RE.fullmatch(items[i + 1][0]) if i + 1 < len(items) else None
        out.append(bool(ms and nxt and ms.groups()[:3] == nxt.groups()[:3] and ms.group(4) != nxt.group(4)))
    return out


def label_steps(prompt: str | Chain, response: str, modulus: int = MODULUS) -> StepLabels:
    """Per-item correctness of any response (expert, garbage, truncated, with corrections) to a task prompt
    (or a Chain). Item i is judged against the expert's item at POSITION p(i): p(0) = 0 and p advances by
    one after every item except a retracted attempt (`_retracted`: a step line redone by the next line), so
    a redo is judged against the same expert item as the attempt it replaces; without retractions p(i) = i."""
    chain = prompt if isinstance(prompt, Chain) else parse_prompt(prompt, modulus)
    if not isinstance(response, str):
        raise TypeError(f"response: expected str, got {type(response).__name__}")
    expected = chain.expert_items()
    n = chain.num_steps
    steps: list[Step] = []
    carried: int | None = chain.start
    first_error = None
    items = split_items(response)
    retracted = _retracted(items)
    pos = 0
    for i, (text, s, e) in enumerate(items):
        ms, ma = _STEP_RE.fullmatch(text), _ANSWER_RE.fullmatch(text)
        kind = "step" if ms else "answer" if ma else "malformed"
        exp = expected[pos] if pos < len(expected) else None
        correct = exp is not None and text == exp
        valid = False
        if ms:
            a, op, b, c = int(ms.group(1)), ms.group(2), int(ms.group(3)), int(ms.group(4))
            f = chain.fmt
            valid = (pos < n and (op, b) == chain.ops[pos] and carried is not None and a == carried
                     and (f(a), f(b), f(c)) == (ms.group(1), ms.group(3), ms.group(4))
                     and c == apply_op(op, a, b, chain.modulus))
            if not retracted[i]:
                carried = c
        else:
            if ma:
                valid = pos == n and carried is not None and ma.group(1) == chain.fmt(carried)
            carried = None
        if not correct and first_error is None:
            first_error = i
        steps.append(Step(i, text, s, e, kind, correct, exp, valid))
        if not retracted[i]:
            pos += 1
    n_retracted = sum(retracted)
    return StepLabels(steps, first_error, len(expected), len(steps) - n_retracted >= len(expected),
                      extract_answer(response))


@dataclasses.dataclass(frozen=True)
class TokenStepLabels:
    """Per response token (one per character, plus one for the end-of-sequence token if `with_eos`):
    `step_index` int32: the item the token belongs to (an item's terminating newline belongs to it; the
        eos token gets -1);
    `step_correct` int8: 1 if that item is correct, 0 if wrong, -1 for the eos token;
    `after_error` int8: 1 iff the token is at or after the start of the first wrong item (so every token of
        the first wrong item and of all later items, and the eos if there is an error), else 0."""
    step_index: np.ndarray
    step_correct: np.ndarray
    after_error: np.ndarray
    labels: StepLabels

    @property
    def num_steps(self) -> int:
        return len(self.labels.steps)


def token_step_labels(prompt: str | Chain, response: str, tokenizer: Any = None, with_eos: bool = False,
                      modulus: int = MODULUS) -> TokenStepLabels:
    """Token-level view of `label_steps`. The tokenizer must be character-level (one token per character,
    checked: ValueError otherwise), so character spans are token spans. `tokenizer=None`: `CharTokenizer`."""
    tok = tokenizer if tokenizer is not None else get_tokenizer()
    n_tok = len(tok.encode(response, add_special_tokens=False))
    if n_tok != len(response):
        raise ValueError(f"token_step_labels needs a character-level tokenizer: {len(response)} characters "
                         f"became {n_tok} tokens")
    labels = label_steps(prompt, response, modulus)
    t = n_tok + (1 if with_eos else 0)
    idx = np.full(t, -1, np.int32)
    corr = np.full(t, -1, np.int8)
    after = np.zeros(t, np.int8)
    for st in labels.steps:
        end = min(st.end + 1, n_tok)  # the terminating newline belongs to the item
        idx[st.start:end] = st.index
        corr[st.start:end] = int(st.correct)
    if labels.first_error is not None:
        after[labels.steps[labels.first_error].start:] = 1
    assert (idx[:n_tok] >= 0).all(), "every response character belongs to an item"
    return TokenStepLabels(idx, corr, after, labels)


def per_step(values: Any, token_labels: TokenStepLabels, reduce: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Aggregate per-token values (e.g. PRM rewards, length = the labelled tokens; extra trailing entries
    such as an eos are ignored) into one value per item: reduce = mean | min | max | sum | last over the
    item's tokens, or prefix: the mean over every token of the response up to the item's last token (the
    score of the prefix the item ends, which is what "correct" means under the true-chain labels). Returns
    (values [S] float64, correct [S] bool) -- ready for a step-error AUROC."""
    fns = {"mean": np.mean, "min": np.min, "max": np.max, "sum": np.sum, "last": lambda x: x[-1]}
    if reduce not in fns and reduce != "prefix":
        raise ValueError(f"reduce={reduce!r}: expected one of {sorted(fns) + ['prefix']}")
    vals = np.asarray(values, np.float64).reshape(-1)
    idx = token_labels.step_index
    if vals.shape[0] < int((idx >= 0).sum()):
        raise ValueError(f"{vals.shape[0]} values for {int((idx >= 0).sum())} labelled tokens")
    idx = idx[:vals.shape[0]]
    if reduce == "prefix":
        csum, out, last = np.cumsum(vals), [], -1
        for s in token_labels.labels.steps:
            own = np.nonzero(idx == s.index)[0]
            last = int(own.max()) if len(own) else last  # an empty item ends where the one before it did
            out.append(csum[last] / (last + 1) if last >= 0 else np.nan)
        out = np.array(out, np.float64)
        return out, np.array(token_labels.labels.correct, bool)
    out = np.array([fns[reduce](vals[idx == s.index]) for s in token_labels.labels.steps], np.float64)
    return out, np.array(token_labels.labels.correct, bool)


# --- perturbation ------------------------------------------------------------------------------------

def is_step_line(text: str) -> bool:
    """Whether `text` (one item, no newline) is a well-formed step line a<op>b=c."""
    return _STEP_RE.fullmatch(text) is not None


def corrupt(response: str, rng: Any, *, step: int | None = None, propagate: bool = False,
            modulus: int = MODULUS) -> str:
    """Change exactly one step line's stated result (a well-formed `a<op>b=c` line, chosen uniformly or
    given by its item index `step`) to a wrong value; everything else is left as it is (the next line's
    left side then disagrees with it). `propagate=True` instead rewrites the later step lines and the answer
    line consistently from the wrong value (like a noisy demonstration). ValueError if there is no step line."""
    rng = _as_rng(rng)
    items = split_items(response)
    cands = [i for i, (text, _, _) in enumerate(items) if _STEP_RE.fullmatch(text)]
    if not cands:
        raise ValueError(f"corrupt: no step line (a<op>b=c) in {response!r}")
    if step is None:
        j = cands[int(rng.integers(len(cands)))]
    elif step in cands:
        j = int(step)
    else:
        raise ValueError(f"corrupt: item {step} is not a step line (step lines: {cands})")
    lines = [t for t, _, _ in items]
    a, op, b, c = _STEP_RE.fullmatch(lines[j]).groups()
    fmt = Chain(0, (), modulus).fmt
    w = _wrong_value(int(c) % modulus, rng, modulus)
    lines[j] = f"{a}{op}{b}={fmt(w)}"
    if propagate:
        carried = w
        for k in range(j + 1, len(lines)):
            ms, ma = _STEP_RE.fullmatch(lines[k]), _ANSWER_RE.fullmatch(lines[k])
            if ms:
                _, op2, b2, _ = ms.groups()
                new = apply_op(op2, carried, int(b2), modulus)
                lines[k] = f"{fmt(carried)}{op2}{b2}={fmt(new)}"
                carried = new
            elif ma:
                lines[k] = f"#{fmt(carried)}"
                break
            else:
                break
    tail = "\n" if response.endswith("\n") else ""
    return "\n".join(lines) + tail


# --- tokenizer ---------------------------------------------------------------------------------------

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
CHARS = "0123456789+-*/%=#?:;,() \n"


class CharTokenizer:
    """One id per character; ids 0..3 are <pad>, <eos>, <bos>, <unk>. Duck-types a HuggingFace tokenizer:
    encode / __call__ / decode / batch_decode / convert_tokens_to_ids / convert_ids_to_tokens / get_vocab,
    eos/pad/bos/unk ids and strings, len() == vocab_size, chat_template None.

    encode: the special-token strings ("<eos>", ...) in the text map to their ids, every other character to
    its id; a character outside the vocabulary raises ValueError naming it. Nothing is added
    (add_special_tokens is accepted and ignored, like Qwen's tokenizers). decode: skip_special_tokens drops
    the specials (default False, like HF); ids outside the vocabulary (a model vocabulary rounded up) decode
    as <unk>."""

    is_char_level = True
    chat_template = None
    padding_side = "left"

    def __init__(self, chars: str = CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: duplicate characters in the vocabulary")
        self._id_to_token = list(SPECIAL_TOKENS) + list(chars)
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        self.pad_token, self.eos_token, self.bos_token, self.unk_token = SPECIAL_TOKENS
        self.pad_token_id, self.eos_token_id, self.bos_token_id, self.unk_token_id = 0, 1, 2, 3
        self.all_special_tokens = list(SPECIAL_TOKENS)
        self.all_special_ids = [0, 1, 2, 3]
        self._special_re = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def encode(self, text: str, add_special_tokens: bool = False, **_: Any) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: expected str, got {type(text).__name__}")
        ids: list[int] = []
        pos = 0
        for m in list(self._special_re.finditer(text)) + [None]:
            chunk_end = m.start() if m else len(text)
            for k in range(pos, chunk_end):
                ch = text[k]
                tid = self._token_to_id.get(ch)
                if tid is None or tid < len(SPECIAL_TOKENS):
                    raise ValueError(f"CharTokenizer: character {ch!r} (position {k} of {text[:40]!r}) is not in "
                                     f"the vocabulary {''.join(self._id_to_token[4:])!r}")
                ids.append(tid)
            if m:
                ids.append(self._token_to_id[m.group(0)])
                pos = m.end()
        return ids

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = False, **_: Any) -> dict:
        if isinstance(text, str):
            return {"input_ids": self.encode(text)}
        return {"input_ids": [self.encode(t) for t in text]}

    def _ids(self, ids: Any) -> list[int]:
        arr = np.asarray(ids).reshape(-1)
        return [int(i) for i in arr]

    def decode(self, ids: Any, skip_special_tokens: bool = False, **_: Any) -> str:
        out = []
        n_special = len(SPECIAL_TOKENS)
        for i in self._ids(ids):
            if not 0 <= i < self.vocab_size:
                i = self.unk_token_id
            if i < n_special and skip_special_tokens:
                continue
            out.append(self._id_to_token[i])
        return "".join(out)

    def batch_decode(self, seqs: Iterable[Any], skip_special_tokens: bool = False, **kw: Any) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in seqs]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of a token string (a special token or one character); the <unk> id if unknown."""
        if isinstance(tokens, str):
            return self._token_to_id.get(tokens, self.unk_token_id)
        return [self._token_to_id.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token[int(ids)] if 0 <= int(ids) < self.vocab_size else self.unk_token
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


_TOKENIZER: CharTokenizer | None = None


def get_tokenizer() -> CharTokenizer:
    """The shared default `CharTokenizer`."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = CharTokenizer()
    return _TOKENIZER


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
