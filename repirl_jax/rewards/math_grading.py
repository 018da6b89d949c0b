"""Math answers and their grading, one item at a time and without a time limit: answer extraction from a
response, ground-truth normalisation, math-verify's parse and verify (with two number spellings fixed first),
and the result types. `rewards/math.py` runs these in its pool of worker processes with per-item limits."""

from __future__ import annotations

import ast
import collections
import dataclasses
import decimal
import logging
import re
from typing import Any, Sequence

from repirl_jax.data.answers import last_boxed

logger = logging.getLogger(__name__)


DEFAULT_TIMEOUT_S = 10.0
"""Default wall-clock limit per item (extraction + parsing + verification), seconds."""

# Per-item statuses.
CORRECT = "correct"
INCORRECT = "incorrect"
NO_ANSWER = "no_answer"
TIMEOUT = "timeout"
ERROR = "error"
STATUSES = (CORRECT, INCORRECT, NO_ANSWER, TIMEOUT, ERROR)


# --------------------------------------------------------------------------------------------------------
# Answer extraction (the \boxed{} extractor lives in data/answers.py, shared with the benchmark loaders)
# --------------------------------------------------------------------------------------------------------

# Final-answer phrases; the latest occurrence wins. The answer is the rest of that line (or the next line when
# the phrase ends its line).
_ANSWER_ANCHOR_RES = [
    re.compile(r"\bfinal\s+answer\b(?:[^\n:：]{0,40}?\bis\b)?[ \t]*[:：]?", re.IGNORECASE),
    re.compile(r"\b(?:the|my)\s+answer\b[^\n:：]{0,40}?\bis\b[ \t]*[:：]?", re.IGNORECASE),
    re.compile(r"\banswer\s*\**\s*[:：]", re.IGNORECASE),
    re.compile(r"^[ \t]*#{4}(?!#)", re.MULTILINE),
]
_LINE_AFTER_ANCHOR_RE = re.compile(r"[ \t*]*(?:\n[ \t]*)?([^\n]*)")
# A leading math segment: $...$, $$...$$, \(...\), \[...\].
_LEADING_MATH_RE = re.compile(r"\$\$(.+?)\$\$|\$((?:\\\$|[^$])+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
_SENTENCE_END_RE = re.compile(r"\.(?=\s)")
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct.*$", re.IGNORECASE)
_DELIM_RE = re.compile(r"\\\(|\\\)|\\\[|\\\]|(?<!\\)\$")
# "<number> <plain words>", e.g. "42 dollars", "12 hours": keep the number. Words have 3+ letters so that
# math such as "2 pi" is left alone; "and"/"or" mean several answers and are left alone too.
_NUMBER_WORDS_RE = re.compile(
    r"(?P<num>[-+]?(?:\\?\$)?\d[\d,]*(?:\.\d+)?%?)\s+(?P<words>[A-Za-z]{3,}(?:[\s-]+[A-Za-z]{3,})*)"
)


def _strip_math_delimiters(s: str) -> str:
    return _DELIM_RE.sub("", s).strip()


def _clean_line_answer(ans: str) -> str:
    ans = _HOPE_RE.sub("", ans).strip().lstrip("*").strip()
    m = _LEADING_MATH_RE.match(ans)
    if m:  # "$\frac{1}{2}$ dollars. Then ..." -> the math segment
        ans = next(g for g in m.groups() if g is not None)
    else:  # "5. This is because ..." -> the first sentence
        ans = _SENTENCE_END_RE.split(ans, maxsplit=1)[0]
    ans = _strip_math_delimiters(ans)
    ans = ans.strip("* \t").rstrip(".,;:").strip()
    m = _NUMBER_WORDS_RE.fullmatch(ans)
    if m and not re.search(r"\b(?:and|or)\b", m.group("words"), re.IGNORECASE):
        ans = m.group("num")
    return ans


def _clean_boxed_answer(ans: str) -> str:
    ans = ans.strip()
    # "\boxed{18.}": a sentence-final period inside the box (but not "\." or the "\right." delimiter).
    if ans.endswith(".") and len(ans) > 1 and not re.search(r"\\(?:[A-Za-z]+)?\.$", ans):
        ans = ans[:-1].rstrip()
    return ans


def extract_answer(response: str) -> str | None:
    """The final answer stated in ``response``, as text (LaTeX), or None if there is none.

    In order of preference:

    1. the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (:func:`last_boxed`);
    2. the text after the last final-answer phrase: "final answer (is)(:)", "the/my answer (...) is",
       "answer:", or a GSM8K-style ``#### X`` line. From the rest of that line (or the next line if the
       phrase ends its line) the leading math segment (``$...$``, ``\\(...\\)``, ...) is taken, else the first
       sentence; "I hope it is correct", ``**`` and trailing punctuation are removed, and a plain-word unit
       after a number ("42 dollars") is dropped. If the latest phrase has nothing after it, earlier ones
       are tried.

    Returns None when no answer can be found or it is empty (a response with no answer scores 0 and is
    counted as ``no_answer``).
    """
    if not response:
        return None
    boxed = last_boxed(response)
    if boxed is not None:
        boxed = _clean_boxed_answer(boxed)
        return boxed or None
    anchors = sorted(
        {(m.start(), m.end()) for pattern in _ANSWER_ANCHOR_RES for m in pattern.finditer(response)}, reverse=True)
    for _, end in anchors[:5]:  # latest phrase first; fall back to a few earlier ones if it has no answer
        ans = _clean_line_answer(_LINE_AFTER_ANCHOR_RE.match(response, end).group(1))
        if ans:
            return ans
    return None


def normalize_ground_truth(ground_truth: str | Sequence[str]) -> str:
    """Ground truth as one LaTeX answer string.

    Accepts a string (plain number or LaTeX, with or without ``$...$``) or a list of strings (e.g.
    OlympiadBench's ``final_answer``), which is joined with ", " (math-verify then reads several answers as
    a set / tuple). A string that is a Python list literal (``"['2']"``, as some dataset exports store
    ``final_answer``) is read as that list. Math delimiters (``$``, ``\\(``, ``\\)``, ``\\[``, ``\\]``) and a
    sentence-final period are removed (the same clean-up as for a boxed answer).
    """
    if isinstance(ground_truth, str):
        s = ground_truth.strip()
        if len(s) >= 4 and s[0] == "[" and s[1] in "'\"" and s[-1] == "]" and s[-2] in "'\"":
            try:
                value = ast.literal_eval(s)
            except (ValueError, SyntaxError):
                value = None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return normalize_ground_truth(value)
        return _clean_boxed_answer(_strip_math_delimiters(s))
    parts = [_clean_boxed_answer(_strip_math_delimiters(str(p))) for p in ground_truth]
    return ", ".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------------
# math-verify calls (no time limit of their own; callers enforce one)
# --------------------------------------------------------------------------------------------------------


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeouts are disabled; this module enforces its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())

_MV: dict[str, Any] = {}


def _math_verify() -> dict[str, Any]:
    """Imported lazily: importing this module stays cheap (math-verify + SymPy take ~0.3 s)."""
    if not _MV:
        import math_verify

        _MV["parse"] = math_verify.parse
        _MV["verify"] = math_verify.verify
        _MV["config"] = [math_verify.LatexExtractionConfig(boxed_match_priority=0)]
    return _MV


# Two number-literal spellings that math-verify's LaTeX parser misreads, fixed before parsing (gold and
# prediction alike):
# * E-notation ("8.7e8", "3.89e-10": 41 Minerva golds) parses as 8.7*E*8 (E = Euler's number), so a correct
#   "8.7 \times 10^{8}" or "870000000" scored 0. math-verify compares numbers with an absolute tolerance
#   (floats rounded to 6 decimals), so the rewrite depends on the exponent:
#   - exponent >= 0: the exact decimal, as a float ("870000000.0"), which matches "8.7 \times 10^{8}",
#     "8.70\times10^8" and "870000000" alike ("8.7\times 10^{8}", an inexact binary 8.7 times 10^8, would miss
#     "870000000");
#   - exponent < 0: "3.89\times 10^{-10}", compared exactly, so that "0" or a wrong mantissa is not accepted
#     as it would be for a float 0.000000000389 (rounded to 0). Below about 1e-15 math-verify's numeric
#     comparison still treats all values as equal (known limitation, see the tests).
# * "7i" vs "7 i": math-verify decides per string whether symbols are complex (a standalone "i" makes them
#   so, a digit-attached "7i" does not), so "-2 + 7i" and "-2+7 i" parsed to different symbols and did not
#   match. A space is put between a digit and a following "i" so that both spellings parse alike.
_E_NOTATION_RE = re.compile(r"(?<![\w\\.])(\d+(?:\.\d*)?|\.\d+)[eE]([-+]?\d+)(?!\w)")
_DIGIT_I_RE = re.compile(r"(?<=\d)i(?![A-Za-z])")


def _e_notation(m: re.Match) -> str:
    mantissa, exponent = m.group(1), int(m.group(2))
    if exponent < 0:
        return f"{mantissa}\\times 10^{{{exponent}}}"
    if exponent > 50:  # absurd: leave it alone
        return m.group(0)
    text = format(decimal.Decimal(f"{mantissa}e{exponent}"), "f")
    return text if "." in text else text + ".0"


def _prepare_latex(answer: str) -> str:
    answer = _E_NOTATION_RE.sub(_e_notation, answer)
    return _DIGIT_I_RE.sub(" i", answer)


def _parse_latex(answer: str) -> list:
    """math-verify's parse of one answer string, read as LaTeX (``[sympy_object, string]`` or ``[string]``)."""
    mv = _math_verify()
    text = "\\boxed{" + _prepare_latex(answer) + "}"
    return mv["parse"](text, extraction_config=mv["config"], parsing_timeout=None)


def _verify(gold: list, pred: list) -> bool:
    return bool(_math_verify()["verify"](gold, pred, timeout_seconds=None))


def _grade_unlimited(response: str, gold: str) -> tuple[str, float, str | None]:
    """(status, score, extracted answer), without any time limit. ``gold`` is already normalised."""
    answer = extract_answer(response)
    if answer is None:
        return NO_ANSWER, 0.0, None
    if not gold:
        raise ValueError("empty ground truth")
    ok = _verify(_parse_latex(gold), _parse_latex(answer))
    return (CORRECT, 1.0, answer) if ok else (INCORRECT, 0.0, answer)


def _equivalent_unlimited(a: str, b: str) -> bool:
    if not a or not b:
        return False
    pa, pb = _parse_latex(a), _parse_latex(b)
    return _verify(pa, pb) or _verify(pb, pa)  # verify is asymmetric (gold first)


def _run_task(kind: str, args: tuple) -> Any:
    if kind == "grade":
        return _grade_unlimited(*args)
    if kind == "equiv":
        return _equivalent_unlimited(*args)
    raise ValueError(f"unknown task kind {kind!r}")


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ItemResult:
    """Outcome for one response: ``score`` (1.0 or 0.0), ``status`` (one of :data:`STATUSES`) and the
    extracted ``answer`` (None if there was none, or on timeout / error)."""

    score: float
    status: str
    answer: str | None = None


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """Counts for one batch. ``n_no_answer + n_timeout + n_error`` responses scored 0 without a real
    comparison: watch these for false negatives."""

    n: int
    n_correct: int
    n_no_answer: int
    n_timeout: int
    n_error: int
    elapsed_s: float = 0.0

    @property
    def n_incorrect(self) -> int:
        return self.n - self.n_correct - self.n_no_answer - self.n_timeout - self.n_error

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n if self.n else 0.0

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat dict for metric loggers."""
        d = dataclasses.asdict(self)
        d["accuracy"] = self.accuracy
        return {prefix + k: v for k, v in d.items()}

    @classmethod
    def from_items(cls, items: Sequence[ItemResult], elapsed_s: float = 0.0) -> "BatchStats":
        c = collections.Counter(it.status for it in items)
        return cls(len(items), c[CORRECT], c[NO_ANSWER], c[TIMEOUT], c[ERROR], elapsed_s)


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Per-item results (in input order) and batch statistics."""

    items: list[ItemResult]
    stats: BatchStats

    @property
    def scores(self) -> list[float]:
        return [it.score for it in self.items]

    @property
    def statuses(self) -> list[str]:
        return [it.status for it in self.items]

    @property
    def answers(self) -> list[str | None]:
        return [it.answer for it in self.items]
