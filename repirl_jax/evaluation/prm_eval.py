"""Using a learned PRM: token rewards of traces, step-error AUROC, and error localisation pictures.

    value   = step_error_auroc(prompts, responses, rewards, modulus)       # rewards: per-token arrays
    render_html(rows, "loc.html"); render_png(rows, "loc.png")            # tokens coloured by reward

AUROC: each step of each trace gets the mean PRM reward of its tokens; the AUROC is the probability that
a correct step scores above a wrong one (ties count half; 0.5 = no signal). Steps are labelled by the
synthetic task's `label_steps` (a step is correct iff it equals the expert's step at that index). The demo
reports it over the policy's sampled test traces plus, per test prompt, a clean expert demonstration and a
copy with one corrupted step (`synthetic.corrupt`), and over the policy's samples alone.
"""

from __future__ import annotations

import html
import textwrap
from typing import Sequence

import numpy as np

from repirl_jax.data import synthetic


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Mann-Whitney AUROC of `scores` separating positives from negatives (nan if one class is empty)."""
    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def within_position_auroc(scores, positive, position) -> float:
    """The AUROC computed separately among the steps at each position (step index) and averaged with weights
    |pos_k| * |neg_k| (the pairs compared): which is the pairs of a correct and a wrong step AT THE SAME INDEX
    that are ranked right. Unlike the pooled AUROC, a score that only falls with position gets 0.5 here
    (wrong steps sit late in a trace: on the demo's traces the step index alone has a pooled AUROC near 0.8)."""
    s, y, k = np.asarray(scores, np.float64), np.asarray(positive, bool), np.asarray(position)
    num = den = 0.0
    for value in np.unique(k):
        m = k == value
        w = float(y[m].sum()) * float((~y[m]).sum())
        if w:
            num += w * auroc(s[m], y[m])
            den += w
    return num / den if den else float("nan")


def step_error_auroc(prompts, responses, rewards, modulus: int, reduce: str = "mean") -> dict:
    """AUROC of per-step PRM scores for correct vs wrong steps of the given traces (synthetic task): pooled
    over all steps, within each step index (`within_position_auroc`), and for the first error."""
    scores, labels, positions, first_scores, first_labels = [], [], [], [], []
    for p, resp, r in zip(prompts, responses, rewards):
        if not resp:
            continue
        tl = synthetic.token_step_labels(p, resp[:len(r)], modulus=modulus)
        vals, correct = synthetic.per_step(r, tl, reduce)
        scores += list(vals)
        labels += list(correct)
        positions += list(range(len(vals)))
        # Localisation: the correct steps before the first error against the first wrong step itself.
        stop = tl.labels.first_error + 1 if tl.labels.first_error is not None else len(vals)
        first_scores += list(vals[:stop])
        first_labels += list(correct[:stop])
    return {"auroc_all_steps": auroc(scores, labels), "auroc_first_error": auroc(first_scores, first_labels),
            "auroc_within_position": within_position_auroc(scores, labels, positions),
            "steps": len(scores), "wrong_steps": int(len(labels) - np.sum(labels))}


# --- pictures ------------------------------------------------------------------------------------------

def _colour(value: float, scale: float) -> tuple[float, float, float]:
    """Red (low reward) - white - green (high reward)."""
    x = float(np.clip(value / max(scale, 1e-9), -1, 1))
    return (1.0, 1.0 + x, 1.0 + x) if x < 0 else (1.0 - x, 1.0, 1.0 - x)


def _scale(rows) -> float:
    vals = np.concatenate([np.asarray(r["rewards"]) - np.mean(r["rewards"]) for r in rows if len(r["rewards"])])
    return float(np.percentile(np.abs(vals), 95)) if len(vals) else 1.0


def render_html(rows: Sequence[dict], path: str, title: str = "PRM token rewards") -> None:
    """rows: {"prompt", "response", "rewards" (per character/token), "first_error_span" ((s, e) or None),
    "correct" (bool)}. Each character is coloured by its reward relative to its trace's mean (green above,
    red below); the true first wrong step is boxed. Correct and wrong traces go in two columns."""
    scale = _scale(rows)

    def trace(r):
        mean = float(np.mean(r["rewards"])) if len(r["rewards"]) else 0.0
        span = r.get("first_error_span")
        parts = []
        for i, ch in enumerate(r["response"]):
            if i >= len(r["rewards"]):
                break
            rgb = _colour(r["rewards"][i] - mean, scale)
            style = "background:rgb(%d,%d,%d)" % tuple(int(255 * c) for c in rgb)
            if span and span[0] <= i < span[1]:
                style += ";outline:2px solid #000"
            text = "&#8629;<br>" if ch == "\n" else html.escape(ch)
            parts.append(f'<span title="{r["rewards"][i]:+.3f}" style="{style}">{text}</span>')
        verdict = "correct" if r["correct"] else "wrong"
        return (f'<div class="t"><div class="p">{html.escape(r["prompt"])} <b>[{verdict}]</b></div>'
                f'<div class="r">{"".join(parts)}</div></div>')

    cols = {True: [trace(r) for r in rows if r["correct"]], False: [trace(r) for r in rows if not r["correct"]]}
    page = f"""<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} .c{{display:inline-block;vertical-align:top;width:45%;margin:1%}}
.t{{margin:8px 0;padding:6px;border:1px solid #ccc}} .r{{font-family:monospace;font-size:18px;line-height:1.6}}
.p{{font-family:monospace;color:#444}}</style>
<h2>{html.escape(title)}</h2><p>Green: reward above the trace's mean; red: below. Box: the true first wrong
step (task labeller). Hover a character for its reward.</p>
<div class="c"><h3>correct traces</h3>{"".join(cols[True])}</div>
<div class="c"><h3>wrong traces</h3>{"".join(cols[False])}</div>"""
    with open(path, "w") as f:
        f.write(page)


def _cells(response: str, n: int, max_chars: int) -> tuple[list[tuple[int, str, int, int]], int]:
    """(index, char, column, line) of each drawn character among the first n of a response (lines break at
    newlines and wrap at max_chars), and the number of lines."""
    cells, col, line = [], 0, 0
    for i, ch in enumerate(response[:n]):
        if ch == "\n":
            col, line = 0, line + 1
            continue
        if col >= max_chars:
            col, line = 0, line + 1
        cells.append((i, ch, col, line))
        col += 1
    return cells, line + 1


def render_png(rows: Sequence[dict], path: str, title: str = "PRM token rewards", max_rows: int = 6,
               panels: Sequence[tuple[str, Sequence[dict]]] | None = None, max_chars: int = 60) -> None:
    """The same picture as `render_html`, as a PNG (matplotlib): correct traces left, wrong traces right.

    panels: [(panel title, rows), ...] drawn side by side under the one `title` instead of `rows`, each with its
    own correct | wrong columns and colour scale: readings of the same traces (same order and labels, e.g. a
    PRM's token rewards and the policy's log-probs), so a trace sits in the same place in every panel.
    Sizes follow the text (inches per character and line; lines wrap at max_chars), so there is no blank band."""

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    panels = list(panels) if panels else [("", rows)]
    ch_w, line_h, prompt_ch, gap, margin = 0.12, 0.25, 0.075, 0.3, 0.15  # inches
    cols = [[[r for r in p_rows if r["correct"]][:max_rows], [r for r in p_rows if not r["correct"]][:max_rows]]
            for _, p_rows in panels]
    layout = [[[_cells(r["response"], len(r["rewards"]), max_chars) for r in col] for col in panel] for panel in cols]
    width = 0.25 + max([2.0] + [max(len(r["prompt"].strip()) * prompt_ch, (1 + max(c for _, _, c, _ in cs)) * ch_w)
                                for panel, lay in zip(cols, layout) for col, cells in zip(panel, lay)
                                for r, (cs, _) in zip(col, cells) if cs])
    body = max([sum(1 + n + 0.6 for _, n in cells) for lay in layout for cells in lay] + [1]) * line_h
    legend = "green: above the trace's mean, red: below; box: the true first wrong step"
    content_w = len(panels) * 2 * width + (len(panels) - 1) * gap
    fig_w = max(content_w, len(legend) * 0.08) + 2 * margin
    left0 = (fig_w - content_w) / 2

    def wrap(text, inches, per_char):  # explicit newlines kept
        return [w for part in text.split("\n")
                for w in textwrap.wrap(part, int(inches / per_char), break_on_hyphens=False)]
    title_lines = wrap(title, fig_w - 2 * margin, 0.1) or [""]  # inches per bold character
    panel_lines = [wrap(name, 2 * width, 0.085) for name, _ in panels]
    title_h = 0.24 * len(title_lines) + 0.22
    panel_h = 0.2 * max(len(p) for p in panel_lines) + (0.08 if any(panel_lines) else 0.0)
    head_h = 0.28
    fig_h = margin + title_h + panel_h + head_h + body + margin
    fig = plt.figure(figsize=(fig_w, fig_h))
    y_text = fig_h - margin
    fig.text(0.5, y_text / fig_h, "\n".join(title_lines), ha="center", va="top", fontsize=11, weight="bold")
    fig.text(0.5, (y_text - 0.24 * len(title_lines)) / fig_h, legend, ha="center", va="top", fontsize=9,
             color="#444")
    for k, ((_, p_rows), panel, lay) in enumerate(zip(panels, cols, layout)):
        scale = _scale(p_rows)
        x0 = left0 + k * (2 * width + gap)
        if panel_lines[k]:
            fig.text((x0 + width) / fig_w, (fig_h - margin - title_h) / fig_h, "\n".join(panel_lines[k]),
                     ha="center", va="top", fontsize=10)
        for j, (col, cells, name) in enumerate(zip(panel, lay, ("correct traces", "wrong traces"))):
            left = x0 + j * width
            fig.text((left + width / 2) / fig_w, (fig_h - margin - title_h - panel_h) / fig_h, name, ha="center",
                     va="top", fontsize=10, style="italic")
            ax = fig.add_axes([left / fig_w, margin / fig_h, width / fig_w, body / fig_h])
            ax.set_xlim(0, width)
            ax.set_ylim(-body, 0)
            ax.axis("off")
            y = 0.0
            for r, (cs, n_lines) in zip(col, cells):
                mean = float(np.mean(r["rewards"])) if len(r["rewards"]) else 0.0
                span = r.get("first_error_span")
                ax.text(0, y, r["prompt"].strip(), family="monospace", fontsize=9, color="#444", va="top")
                y -= line_h
                for i, ch, c, line in cs:
                    x, top = c * ch_w, y - line * line_h
                    ax.add_patch(Rectangle((x, top - line_h * 0.85), ch_w, line_h * 0.85,
                                           color=_colour(r["rewards"][i] - mean, scale)))
                    if span and span[0] <= i < span[1]:
                        ax.add_patch(Rectangle((x, top - line_h * 0.85), ch_w, line_h * 0.85, fill=False, lw=1.5))
                    ax.text(x + ch_w / 2, top - line_h * 0.42, ch, family="monospace", fontsize=11, ha="center",
                            va="center")
                y -= (n_lines + 0.6) * line_h
    fig.savefig(path, dpi=110)
    plt.close(fig)


def localisation_rows(prompts, responses, rewards, modulus: int) -> list[dict]:
    """Rows for the pictures, one per distinct (prompt, response)."""
    rows, seen = [], set()
    for p, resp, r in zip(prompts, responses, rewards):
        if (p, resp) in seen:
            continue
        seen.add((p, resp))
        labels = synthetic.label_steps(p, resp, modulus)
        span = None
        if labels.first_error is not None and labels.first_error < len(labels.steps):
            st = labels.steps[labels.first_error]
            span = (st.start, st.end)
        rows.append({"prompt": p, "response": resp, "rewards": list(map(float, r)), "first_error_span": span,
                     "correct": labels.first_error is None and labels.complete})
    return rows


def pair_accuracy(prompts, clean, corrupted, clean_rewards, corrupted_rewards, modulus: int,
                  reduce: str = "last") -> float:
    """Clean-vs-corrupted pair accuracy: for each (clean demonstration, the same one with one corrupted step
    j), the fraction of pairs whose corrupted step j scores strictly below the clean step j (ties count
    half). Step scores: `synthetic.per_step(rewards, ..., reduce)`; j: the corrupted copy's first error."""
    wins = []
    for p, a, b, ra, rb in zip(prompts, clean, corrupted, clean_rewards, corrupted_rewards):
        tb = synthetic.token_step_labels(p, b[:len(rb)], modulus=modulus)
        j = tb.labels.first_error
        if j is None:
            continue
        va, _ = synthetic.per_step(ra, synthetic.token_step_labels(p, a[:len(ra)], modulus=modulus), reduce)
        vb, _ = synthetic.per_step(rb, tb, reduce)
        if j >= len(va) or j >= len(vb):
            continue
        wins.append(1.0 if vb[j] < va[j] else 0.5 if vb[j] == va[j] else 0.0)
    return float(np.mean(wins)) if wins else float("nan")
