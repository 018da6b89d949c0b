"""Paired comparisons over seeds: the mean difference, its 95% t-interval, and a verdict.

    lo, mean, hi = paired_interval(a, b)       # a[i], b[i]: the same seed's result of two runs
    verdict(lo, hi)                            # "holds" (lo > 0) / "does not hold" (hi < 0) / "inconclusive"
    claims_table(results, claims)              # tools/reproduce.py's table of the paper's claims

The interval is mean(d) +- t_{0.975, n-1} * std(d, ddof=1) / sqrt(n) for d = a - b (Student's t; n >= 2).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# t_{0.975, df} for df = 1..30 (two-sided 95%); beyond 30 the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"t quantile: df={df} must be >= 1")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_interval(a: Sequence[float], b: Sequence[float] | None = None) -> tuple[float, float, float]:
    """(low, mean, high) of the 95% t-interval of mean(a - b) (b omitted: of mean(a)). nan with < 2 pairs."""
    d = np.asarray(a, np.float64) - (0.0 if b is None else np.asarray(b, np.float64))
    d = d[np.isfinite(d)]
    if d.size < 2:
        m = float(d.mean()) if d.size else float("nan")
        return float("nan"), m, float("nan")
    m, half = float(d.mean()), t975(d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return m - half, m, m + half


def verdict(low: float, high: float) -> str:
    """"holds" if the whole interval is above 0, "does not hold" if below, else "inconclusive"."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    return "holds" if low > 0 else "does not hold" if high < 0 else "inconclusive"


def field(row: dict, key: str):
    """row["a"]["b"]... for a dotted key (rerank.16.majority); None if absent."""
    node = row
    for part in key.split("."):  # rerank N keys are ints in memory, strings after a JSON round trip
        if not isinstance(node, dict):
            return None
        node = node[part] if part in node else node.get(int(part)) if part.isdigit() else None
    return node


def claims_table(results: dict, claims) -> str:
    """A markdown table, one row per claim (text, method a, field a, method b, field b): the per-seed paired
    gain a - b (b None: a - 0.5, for an AUROC), its 95% t-interval and `verdict`. `results`: method -> rows
    {"seed", fields...}; fields are dotted keys into a row (`field`)."""
    rows = ["| claim | seeds | mean gain | 95% interval | verdict |", "|---|---|---|---|---|"]
    ok = lambda v: v is not None and np.isfinite(v)  # noqa: E731
    for claim, ma, fa, mb, fb in claims:
        a = {r["seed"]: field(r, fa) for r in results.get(ma, [])}
        b = {s_: 0.5 for s_ in a} if mb is None else {r["seed"]: field(r, fb) for r in results.get(mb, [])}
        seeds = sorted(s_ for s_ in a if s_ in b and ok(a[s_]) and ok(b[s_]))
        if not seeds:
            rows.append(f"| {claim} | 0 | - | - | not run |")
            continue
        lo, m, hi = paired_interval([a[s_] for s_ in seeds], [b[s_] for s_ in seeds])
        scale, digits, unit = (1, 3, "") if mb is None else (100, 1, " pts")
        num = lambda v: f"{scale * v:+.{digits}f}"  # noqa: E731
        interval = f"[{num(lo)}, {num(hi)}]" if np.isfinite(lo) else "-"
        rows.append(f"| {claim} | {len(seeds)} | {num(m)}{unit} | {interval} | {verdict(lo, hi)} |")
    return "\n".join(rows) + "\n"
