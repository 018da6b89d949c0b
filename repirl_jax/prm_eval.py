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
from typing import Sequence

import numpy as np


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
    from repirl_jax.data import synthetic
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


def render_png(rows: Sequence[dict], path: str, title: str = "PRM token rewards", max_rows: int = 6) -> None:
    """The same picture as `render_html`, as a PNG (matplotlib): correct traces left, wrong traces right."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    scale = _scale(rows)
    columns = [[r for r in rows if r["correct"]][:max_rows], [r for r in rows if not r["correct"]][:max_rows]]
    line_h, char_w = 0.32, 0.16
    heights = [sum(r["response"].count("\n") + 2.4 for r in col) for col in columns]
    fig_h = max(max(heights) * line_h + 1.0, 2.0)
    fig, axes = plt.subplots(1, 2, figsize=(12, fig_h))
    for ax, col, name in zip(axes, columns, ("correct traces", "wrong traces")):
        ax.set_xlim(0, 6.5)
        ax.set_ylim(-max(heights) * line_h - 0.2, 0.4)
        ax.axis("off")
        ax.set_title(name)
        y = 0.0
        for r in col:
            mean = float(np.mean(r["rewards"])) if len(r["rewards"]) else 0.0
            ax.text(0, y, r["prompt"].strip(), family="monospace", fontsize=10, color="#444", va="top")
            y -= line_h
            x = 0.0
            span = r.get("first_error_span")
            for i, ch in enumerate(r["response"][:len(r["rewards"])]):
                if ch == "\n":
                    x, y = 0.0, y - line_h
                    continue
                ax.add_patch(Rectangle((x, y - line_h * 0.85), char_w, line_h * 0.85,
                                       color=_colour(r["rewards"][i] - mean, scale)))
                if span and span[0] <= i < span[1]:
                    ax.add_patch(Rectangle((x, y - line_h * 0.85), char_w, line_h * 0.85, fill=False, lw=1.5))
                ax.text(x + char_w / 2, y - line_h * 0.42, ch, family="monospace", fontsize=11, ha="center",
                        va="center")
                x += char_w
            y -= line_h * 1.4
    fig.suptitle(title + "  (green: above the trace's mean reward, red: below; box: true first wrong step)",
                 fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def localisation_rows(prompts, responses, rewards, modulus: int) -> list[dict]:
    """Rows for the pictures, one per distinct (prompt, response)."""
    from repirl_jax.data import synthetic
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
    from repirl_jax.data import synthetic
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
