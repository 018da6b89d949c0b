"""The one ``\\boxed{}`` extractor: the answer a MATH-style solution or a model's response writes last.

Both the benchmark loaders (ground truths from solutions) and the math grader (answers from responses) read
answers through it, so they agree on what a box is."""

from __future__ import annotations

import re

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _closing_braces(text: str) -> dict[int, int]:
    """{position of "{": position of its matching "}"} in one pass. Escaped braces (``\\{``, ``\\}``) are
    skipped, unclosed groups are absent."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    j = 0
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            stack.append(j)
        elif c == "}" and stack:
            pairs[stack.pop()] = j
        j += 1
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, or None.

    Braces are matched with nesting; escaped braces (``\\{``, ``\\}``) do not count. A final box that is
    never closed (a truncated response) is skipped in favour of the last complete one. Also accepts the
    single-token form ``\\boxed 5``. Linear in the length of ``text``.
    """
    closing: dict[int, int] | None = None
    for m in reversed(list(_BOXED_RE.finditer(text))):
        i = m.end()
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            continue
        if text[i] != "{":  # "\boxed 5" (TeX takes a single token)
            token = re.match(r"[^\s$]+", text[i:i + 200])
            if token:
                return token.group(0)
            continue
        if closing is None:
            closing = _closing_braces(text)
        j = closing.get(i)
        if j is not None:
            return text[i + 1 : j]
    return None
