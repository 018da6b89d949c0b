"""What a trained PRM is measured by, for the training CLI, evaluation and tools: PRM token rewards of
texts, answer grouping and selection (majority, best-of-N, PRM-weighted vote, minimum step score), pass@k,
the step-error AUROC report with error-localisation pictures, and test-time reranking on the synthetic task.

`repirl_jax.launch` and `repirl_jax.evaluate` both import this module and never each other.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from repirl_jax import algorithms
from repirl_jax.algorithms import losses
from repirl_jax.algorithms.batches import Traj, pad_right
from repirl_jax.checkpoints import hf
from repirl_jax.data import synthetic
from repirl_jax.evaluation import prm_eval
from repirl_jax.generation import sampling
from repirl_jax.models import logprobs, prm_heads

VOTE_TRANSFORMS = ("none", "sigmoid", "exp", "rank")  # `vote_weights`
PRM_VOTES = ("prm_weighted", *(f"prm_weighted:{t}" for t in VOTE_TRANSFORMS[1:]))
SELECTIONS = ("majority", "best_of_n", "prm_weighted", "min_step", *PRM_VOTES[1:])
PRM_SELECTIONS = tuple(s for s in SELECTIONS if s != "majority")


# --- selection and pass@k (pure functions) --------------------------------------------------------------

def step_reduce(algo: str) -> str:
    """How a step's score is read from a method's token rewards: "last" (the step-end token's value, e.g.
    Math-Shepherd, whose PRM is trained there alone) or "mean" over the step's tokens (dense-reward PRMs)."""
    return algorithms.get(algo).step_reduce


def min_step_scores(rewards_bt, token_ids_bt, mask_bt, delimiter_id: int, every: int = 0,
                    reduce: str = "mean") -> np.ndarray:
    """Minimum step score of each trace [B] from its PRM token rewards [B, T]: steps end at `delimiter_id`
    tokens (or every `every` tokens) and at the last token (losses.step_end_mask); a step's score is the mean
    of its token rewards (reduce "mean") or the value at its end token ("last"); -inf for an empty trace."""
    ends = np.asarray(losses.step_end_mask(np.asarray(token_ids_bt), np.asarray(mask_bt), delimiter_id, every))
    r = np.asarray(rewards_bt, np.float64)
    return np.array([losses.min_step_score(r[i][mask_bt[i] > 0], ends[i][mask_bt[i] > 0], reduce)
                     for i in range(r.shape[0])])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def group_answers(answers: Sequence[str | None], equivalent: Callable[[list[tuple[str, str]]], list[bool]]
                  ) -> list[int]:
    """Group label per answer (None answers get their own singleton groups, never winning a tie against a
    real answer). `equivalent` decides a batch of (a, b) pairs; pairs are tested against group leaders."""
    labels = [-1] * len(answers)
    leaders: list[int] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        if leaders:
            same = equivalent([(answers[j], a) for j in leaders])
            hit = next((j for j, s in zip(leaders, same) if s), None)
            if hit is not None:
                labels[i] = labels[hit]
                continue
        labels[i] = len(leaders)
        leaders.append(i)
    next_label = len(leaders)
    for i, a in enumerate(answers):
        if a is None:
            labels[i] = next_label
            next_label += 1
    return labels


def vote_weights(prm_scores: Sequence[float], transform: str = "none") -> np.ndarray:
    """Per-sample vote weights from PRM scores s_i: none s_i (METHOD.md), sigmoid 1 / (1 + e^-s_i), exp
    e^(s_i - max s) (a softmax vote), rank the 1-based rank of s_i among the N (ties share the mean rank).
    Every transform but none is positive and increasing, so a group's total grows with its size."""
    s = np.asarray(prm_scores, np.float64)
    if transform == "none":
        return s
    if transform == "sigmoid":
        return 1.0 / (1.0 + np.exp(-s))
    if transform == "exp":
        return np.exp(s - s.max())
    if transform == "rank":
        order = np.argsort(s, kind="mergesort")
        ranks = np.empty(len(s))
        ranks[order] = np.arange(1, len(s) + 1)
        for v in np.unique(s):  # ties: the mean rank
            ranks[s == v] = ranks[s == v].mean()
        return ranks
    raise ValueError(f"vote transform {transform!r}: expected one of {VOTE_TRANSFORMS}")


def select(method: str, labels: Sequence[int], answers: Sequence[str | None],
           prm_scores: Sequence[float] | None = None) -> int:
    """Index of the chosen sample under `method`: majority (largest answer group), best_of_n / min_step (the
    highest `prm_scores`: mean token reward / minimum step score), prm_weighted (the group with the largest
    sum of PRM scores, its best-scoring member; METHOD.md's rule). "prm_weighted:<t>" sums transformed
    scores instead (`vote_weights`: sigmoid, exp, rank), so mostly negative scores do not penalise a
    large group."""
    n = len(labels)
    has_answer = np.array([a is not None for a in answers])
    method, _, transform = method.partition(":")
    if method in ("best_of_n", "min_step"):  # rerank: the highest-scoring sample
        return int(np.argmax(np.asarray(prm_scores)))
    if method not in ("majority", "prm_weighted"):
        raise ValueError(f"selection {method!r}: expected one of {SELECTIONS}")
    weights = np.ones(n) if method == "majority" else vote_weights(prm_scores, transform or "none")
    groups = sorted(set(labels))
    totals = {g: sum(weights[i] for i in range(n) if labels[i] == g) for g in groups}
    # Groups with a real answer beat answerless singletons; ties go to the earliest group.
    best = max(groups, key=lambda g: (any(has_answer[i] for i in range(n) if labels[i] == g), totals[g], -g))
    members = [i for i in range(n) if labels[i] == best]
    if method == "majority":
        return members[0]
    return max(members, key=lambda i: prm_scores[i])


# --- PRM token rewards of texts ---------------------------------------------------------------------------

def token_rewards_of_texts(reward_rows: Callable, prompt_ids: Sequence[Sequence[int]],
                           response_ids: Sequence[Sequence[int]], prompt_len: int, response_len: int, pad_id: int,
                           batch: int | None = None) -> list[np.ndarray]:
    """PRM token rewards of each (prompt, response) pair of token ids: a list of [len(response_i)] arrays
    (responses cut to response_len). `reward_rows(prompt, prompt_mask, response, response_mask)` maps
    host arrays [rows, P] / [rows, response_len] to [rows, response_len] rewards; it runs on batches of
    `batch` rows (default: all rows at once; the last batch padded), prompts left-padded and truncated on
    the left to prompt_len."""
    rows = len(prompt_ids)
    batch = batch or rows
    out: list[np.ndarray] = []
    for s in range(0, rows, batch):
        resp = [list(ids)[:response_len] for ids in response_ids[s:s + batch]]
        pt, pm = sampling.pad_prompts(prompt_ids[s:s + batch], prompt_len, batch, pad_id, truncate="left")
        rt, rm = pad_right(resp + [[]] * (batch - len(resp)), response_len, pad_id)
        r = np.asarray(reward_rows(pt, pm, rt, rm))
        out += [r[i, :len(resp[i])] for i in range(len(resp))]
    return out


def trainer_reward_rows(trainer) -> Callable:
    """`reward_rows` of a Trainer's current PRM: the scalar head's r_phi, or the implicit PRM's
    beta * (log pi_phi - log pi_ref) (with the reference's log-probs of the same rows)."""

    def reward_rows(pt, pm, rt, rm):
        traj = Traj(pt, pm, rt, rm)
        ref_logp = trainer.logp_in_chunks(trainer.ref, traj) if trainer.prm_head.needs_ref_logp else None
        return trainer.rewards_in_chunks(traj, ref_logp)
    return reward_rows


def trainer_text_rewards(trainer, prompts: Sequence[str], texts: Sequence[str]) -> list[np.ndarray]:
    """The trainer's current PRM token rewards of each (prompt text, response text): [len(response_i)] each."""
    tok = trainer.tokenizer
    return token_rewards_of_texts(trainer_reward_rows(trainer), [tok.encode(p, add_special_tokens=False) for p in prompts],
                                  [tok.encode(t, add_special_tokens=False) for t in texts], trainer.P, trainer.R,
                                  trainer.pad_id)


def trainer_text_logprobs(trainer, prompts: Sequence[str], texts: Sequence[str]) -> list[np.ndarray]:
    """The trainer's current policy's token log-probs log pi(a_t | s_t) of each (prompt text, response text):
    [len(response_i)] each; what a prm.head=likelihood PRM starts from (its r_t is its own log-prob)."""
    tok, policy = trainer.tokenizer, trainer.model_params()
    return token_rewards_of_texts(lambda *rows: trainer.logp_in_chunks(policy, Traj(*rows)),
                                  [tok.encode(p, add_special_tokens=False) for p in prompts],
                                  [tok.encode(t, add_special_tokens=False) for t in texts], trainer.P, trainer.R,
                                  trainer.pad_id)


def run_config(path: str) -> dict | None:
    """The config of a training run directory (written by repirl_jax.launch), or None for model dirs."""
    file = os.path.join(path, "config.json")
    if os.path.exists(os.path.join(path, "model_config.json")) and os.path.exists(file):
        with open(file) as f:
            return json.load(f)
    return None


def make_prm_scorer(run_dir: str, generator, dtype: str = "float32", step: int | None = None,
                    token_level: bool = False):
    """prm_score_fn(prompts, completions) -> per prompt, (mean token reward rbar_phi, minimum step score) of
    each completion (token_level: the per-token rewards) under the scalar-head PRM of a training run
    (`run_dir`, written by repirl_jax.launch; its steps.delimiter / steps.every define the steps)."""

    trunk, cfg, head, _ = hf.load_training_checkpoint(run_dir, step, which="prm")
    if head is None:
        raise ValueError(f"{run_dir}: the PRM has no scalar head (prm.head implicit or likelihood: a whole LM, "
                         "which this scorer does not read)")
    prm = {"trunk": jax.device_put(trunk), "head": {k: jnp.asarray(v, jnp.float32) for k, v in head.items()}}
    cfg = cfg.replace(dtype=dtype)
    rewards = jax.jit(lambda p, *a: logprobs.prm_token_rewards(p, cfg, *a))
    rc = run_config(run_dir) or {}
    steps = rc.get("steps", {"delimiter": "\n", "every": 0})
    delim = generator.encode([steps["delimiter"]])[0]
    delim_id = delim[0] if len(delim) == 1 else -1
    if delim_id < 0 and steps["every"] <= 0:
        raise ValueError(f"{run_dir}: steps.delimiter={steps['delimiter']!r} is not one token")
    reduce = step_reduce(rc.get("algo", "repirl"))
    max_new = None

    def score(prompts, completions):
        nonlocal max_new
        ids = generator.encode(prompts)
        flat_prompt_ids = [p for p, row in zip(ids, completions) for _ in row]
        flat = [c.token_ids for row in completions for c in row]
        max_new = max(max_new or 8, max(len(t) for t in flat))  # grows only: few shapes to compile
        r = token_rewards_of_texts(lambda *a: rewards(prm, *a), flat_prompt_ids, flat, generator.max_prompt_len,
                                   max_new, generator.pad_id, generator.batch_size)
        if token_level:
            scores = r
        else:
            rt, rm = pad_right([t[:max_new] for t in flat], max_new, generator.pad_id)
            rr = np.zeros(rm.shape, np.float64)
            for i, x in enumerate(r):
                rr[i, :len(x)] = x
            low = min_step_scores(rr, rt, rm, delim_id, steps["every"], reduce)
            scores = [(float(x.sum() / max(len(x), 1)), float(low[i])) for i, x in enumerate(r)]
        out, k = [], 0
        for row in completions:
            out.append(scores[k:k + len(row)])
            k += len(row)
        return out
    return score


# --- reports of a training run on the synthetic task --------------------------------------------------

def head_name(algo: str, head: str) -> str:
    """How the pictures and reports name a PRM head (prm.head): its `prm_heads` title ("the paper's" for
    rePIRL's scalar head)."""
    h = prm_heads.HEADS[head]
    return h.title + (" (the paper's)" if algo == "repirl" and h == prm_heads.HEADS["scalar"] else "")


def localisation_titles(algo: str, head: str, reduce: str, prm_auroc: float,
                        logp_auroc: float | None) -> tuple[str, list[str]]:
    """(figure title, panel titles) of the localisation pictures: the PRM's head and step-error AUROC, and,
    when given, the policy log-probs' AUROC on the same traces (the reading prm.head=likelihood starts from)."""
    prm = f"{algo} PRM, {head_name(algo, head)}: step-error AUROC {prm_auroc:.3f}"
    if logp_auroc is None:
        return f"{prm} (step {reduce})", []
    return (f"{prm}; the final policy's own log-probs on the same traces: {logp_auroc:.3f}",
            [f"PRM token rewards, {head_name(algo, head)}\nstep-error AUROC {prm_auroc:.3f} (step {reduce})",
             f"policy log-probs log pi(a_t|s_t) (what prm.head=likelihood starts from)\n"
             f"step-error AUROC {logp_auroc:.3f} (step mean)"])


def prm_report(config, trainer, test: list[dict], workdir: str, n_prompts: int = 128) -> dict:
    """Step-error AUROC of the final PRM on sampled test traces, and the error-localisation pictures: the PRM's
    token rewards beside the final policy's own token log-probs of the same traces (with their AUROC, by the
    same function; one panel when the PRM is already the likelihood head)."""

    per_call = config.rollout.prompts_per_call
    records = test[:max(per_call, (min(n_prompts, len(test)) // per_call) * per_call)]
    modulus = config.data.synthetic.modulus
    ro = trainer.rollouts(records, jax.random.key(config.seed + 7))
    # Traces: the policy's samples, plus per prompt a clean expert demonstration and one with a single
    # corrupted step (so both classes of steps exist even when the policy is nearly always right or wrong).
    rng = np.random.default_rng(config.seed)
    prompts = [r["prompt"] for r in records for _ in range(trainer.n)]
    texts = list(ro["texts"])
    for r in records:
        clean = r["experts"][0]
        prompts += [r["prompt"], r["prompt"]]
        texts += [clean, synthetic.corrupt(clean, rng, modulus=modulus)]
    rewards = trainer_text_rewards(trainer, prompts, texts)
    n_policy = len(ro["texts"])
    reduce = step_reduce(config.algo)
    out = prm_eval.step_error_auroc(prompts, texts, rewards, modulus, reduce)
    pol = prm_eval.step_error_auroc(prompts[:n_policy], texts[:n_policy], rewards[:n_policy], modulus, reduce)
    out.update(auroc_policy_samples=pol["auroc_all_steps"])
    logps = None if trainer.prm_head.is_log_likelihood else trainer_text_logprobs(trainer, prompts, texts)
    logp_auroc = (prm_eval.step_error_auroc(prompts, texts, logps, modulus, "mean")["auroc_all_steps"]
                  if logps is not None else None)

    def pictured(values):
        return (prm_eval.localisation_rows(prompts[:n_policy], texts[:n_policy], values[:n_policy], modulus)
                + prm_eval.localisation_rows(prompts[n_policy:], texts[n_policy:], values[n_policy:], modulus))
    rows = pictured(rewards)
    title, names = localisation_titles(config.algo, config.prm.head, reduce, out["auroc_all_steps"], logp_auroc)
    html_path, png_path = os.path.join(workdir, "localisation.html"), os.path.join(workdir, "localisation.png")
    if jax.process_index() == 0:
        prm_eval.render_html(rows[:24] + rows[n_policy:n_policy + 16], html_path, title=title)
        prm_eval.render_png(rows, png_path, title=title,
                            panels=list(zip(names, (rows, pictured(logps)))) if logps is not None else None)
    return ({f"prm_{k}": v for k, v in out.items()} | {"policy_logp_auroc_all_steps": logp_auroc}
            | {"localisation_html": html_path, "localisation_png": png_path})


def rerank_report(config, trainer, test: list[dict], ns=(4, 8, 16), temperature: float = 0.8) -> dict:
    """Test-time reranking with the run's PRM / discriminator on the synthetic test prompts: max(ns) samples
    per prompt at `temperature`; for each N the first N are ranked. Per N (fractions of prompts): pass@1 (mean
    single-sample accuracy), majority vote, best-of-N by mean token reward, best-of-N by minimum step score,
    and the PRM-weighted vote on mean token rewards (METHOD.md's sum, and its sigmoid / exp / rank transforms)."""

    per_call, big = config.rollout.prompts_per_call, max(ns)
    records = test[:max(per_call, (len(test) // per_call) * per_call)]
    ro = trainer.rollouts(records, jax.random.key(config.seed + 11), num_samples=big, temperature=temperature)
    recs = [r for r in records for _ in range(big)]
    scores = np.asarray(trainer.reward_fn(recs, ro["texts"])[0], np.float32).reshape(len(records), big)
    p_toks, p_mask = trainer.prompt_arrays(records, big)
    r = trainer.rewards_in_chunks(Traj(p_toks, p_mask, ro["tokens"], ro["mask"]), None)
    mean = ((r * ro["mask"]).sum(1) / np.maximum(ro["mask"].sum(1), 1)).reshape(len(records), big)
    delim = trainer.tokenizer.encode(config.steps.delimiter, add_special_tokens=False)
    low = min_step_scores(r, ro["tokens"], ro["mask"], delim[0] if len(delim) == 1 else -1,
                          config.steps.every, step_reduce(config.algo)).reshape(len(records), big)
    answers = [synthetic.extract_answer(t) for t in ro["texts"]]
    out = {}
    for n in ns:
        acc = {"pass@1": [], "majority": [], "best_of_n": [], "min_step": [], **{k: [] for k in PRM_VOTES}}
        for i in range(len(records)):
            ans = answers[i * big:i * big + n]
            labels = group_answers(ans, lambda pairs: [a == b for a, b in pairs])
            acc["pass@1"].append(scores[i, :n].mean())
            acc["majority"].append(scores[i, select("majority", labels, ans)])
            acc["best_of_n"].append(scores[i, select("best_of_n", labels, ans, mean[i, :n])])
            acc["min_step"].append(scores[i, select("min_step", labels, ans, low[i, :n])])
            for key in PRM_VOTES:
                acc[key].append(scores[i, select(key, labels, ans, mean[i, :n])])
        out[n] = {k: float(np.mean(v)) for k, v in acc.items()}
    return out
