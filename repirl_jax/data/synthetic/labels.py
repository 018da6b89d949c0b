"""Step correctness by the true chain (`label_steps`), per-token step labels, and one-step corruptions."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from repirl_jax.data.synthetic.task import (
    _ANSWER_RE,
    _STEP_RE,
    MODULUS,
    Chain,
    _as_rng,
    _wrong_value,
    apply_op,
    extract_answer,
    parse_prompt,
)
from repirl_jax.data.synthetic.tokenizer import get_tokenizer

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
