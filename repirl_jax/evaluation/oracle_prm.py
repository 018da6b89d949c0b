"""The oracle PRM: a PRM trained with SUPERVISED per-token step labels from the synthetic task's labeller
(`synthetic.token_step_labels`), the ceiling against which learned PRMs are measured. Three heads
(`token_logits`): a scalar head on the trunk ({"trunk", "head"}); a whole Qwen model whose logit is the
log-odds of its own probability of the token (the likelihood head; then the BCE is likelihood on the tokens
of correct steps and unlikelihood on those of wrong ones); or a Qwen model whose logit is a scaled mean of
its log-probs over the response prefix (`init_prefix_oracle`: trained at the step ends, its prefix readout
is what `tools/prm_quality.py` scores).

    traces = label_traces(prompts, responses, tokenizer, P, R, modulus)     # host arrays + 0/1 targets
    prm, log = train_oracle_prm(prm, cfg, traces, steps=400, batch=64, lr=1e-3, seed=0)
    rewards = score_traces(prm, cfg, traces)                                  # [B, R] logits, 0 off-mask

Target of response token t of a trace: 1 if the step (line) it belongs to is correct, 0 if not (each line's
terminating newline belongs to it); the end-of-sequence token's target is 1 iff the trace ends with the
correct answer line (as the labeller judges it). Loss: token-mean binary cross-entropy of sigmoid(z_t), z_t the
oracle's logit at token t (the scalar head at the place rePIRL reads r_phi(s_t, a_t), or the log-odds):

    L = -sum_{b,t} m[b,t] (y log sigmoid(z) + (1 - y) log sigmoid(-z)) / sum m

If a model of the demo's size trained this way separates correct from wrong steps (step-error AUROC >= 0.90
on held-out policy traces), a step is locally checkable by that model, and a learned PRM below that has
room to improve.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from repirl_jax.algorithms import losses
from repirl_jax.algorithms.batches import pad_right
from repirl_jax.data import synthetic
from repirl_jax.generation import sampling
from repirl_jax.models import logprobs


@dataclasses.dataclass
class LabelledTraces:
    """Prompt/response arrays in the trainer's layout plus per-token targets. B rows, P / R slots."""
    prompt: np.ndarray  # [B, P] int32, left-padded
    prompt_mask: np.ndarray  # [B, P] int32
    response: np.ndarray  # [B, R] int32 (response tokens + eos, right-padded)
    response_mask: np.ndarray  # [B, R] float32
    targets: np.ndarray  # [B, R] float32 0/1 (0 off-mask)
    prompts: list[str]
    texts: list[str]
    ends: np.ndarray | None = None  # [B, R] float32: 1 at each step's last token and at the eos

    def __len__(self) -> int:
        return self.prompt.shape[0]

    def rows(self, idx) -> "LabelledTraces":
        idx = np.asarray(idx)
        return LabelledTraces(self.prompt[idx], self.prompt_mask[idx], self.response[idx], self.response_mask[idx],
                              self.targets[idx], [self.prompts[i] for i in idx], [self.texts[i] for i in idx],
                              None if self.ends is None else self.ends[idx])

    @staticmethod
    def concat(parts: Sequence["LabelledTraces"]) -> "LabelledTraces":
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        ends = cat("ends") if all(p.ends is not None for p in parts) else None
        return LabelledTraces(cat("prompt"), cat("prompt_mask"), cat("response"), cat("response_mask"),
                              cat("targets"), [s for p in parts for s in p.prompts], [s for p in parts for s in p.texts],
                              ends)


def token_targets(prompt: str, response: str, max_len: int, modulus: int) -> tuple[np.ndarray, np.ndarray]:
    """(targets, ends) [max_len] float32 for `response` + eos cut to max_len (see module docstring); ends is 1
    at each step's last token (its newline, or its last character for the final line) and at the eos."""
    tl = synthetic.token_step_labels(prompt, response, with_eos=True, modulus=modulus)
    y = (tl.step_correct == 1).astype(np.float32)
    steps = tl.labels.steps
    y[-1] = float(bool(steps) and steps[-1].kind == "answer" and steps[-1].correct)  # eos: a right final answer
    idx = tl.step_index
    e = np.zeros(len(y), np.float32)
    e[-1] = 1.0
    e[:-1] = (idx[:-1] >= 0) & (idx[:-1] != np.append(idx[1:-1], -2))  # the last token of each item
    out, ends = np.zeros(max_len, np.float32), np.zeros(max_len, np.float32)
    out[:min(len(y), max_len)] = y[:max_len]
    ends[:min(len(e), max_len)] = e[:max_len]
    return out, ends


def label_traces(prompts: Sequence[str], responses: Sequence[str], tokenizer, max_prompt_len: int,
                 max_response_len: int, modulus: int) -> LabelledTraces:
    """Token arrays and labeller targets of (prompt, response) pairs of the synthetic task."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    p_ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    r_ids = [tokenizer.encode(r, add_special_tokens=False)[:max_response_len - 1] + [tokenizer.eos_token_id]
             for r in responses]
    pt, pm = sampling.pad_prompts(p_ids, max_prompt_len, pad_token_id=tokenizer.pad_token_id, truncate="left")
    rt, rm = pad_right(r_ids, max_response_len, tokenizer.pad_token_id)
    ye = [token_targets(p, r, max_response_len, modulus) for p, r in zip(prompts, responses)]
    y = np.stack([a for a, _ in ye]) * rm if ye else np.zeros_like(rm)
    e = np.stack([b for _, b in ye]) * rm if ye else np.zeros_like(rm)
    return LabelledTraces(pt, pm.astype(np.int32), rt, rm, y.astype(np.float32), list(prompts), list(responses),
                          e.astype(np.float32))


def init_prefix_oracle(lm: dict) -> dict:
    """A prefix-readout oracle from a Qwen model: {"lm": params, "scale": 1, "bias": 0} (`token_logits`)."""
    return {"lm": lm, "scale": jnp.ones((), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def prefix_mean(values_br: jax.Array, mask_br: jax.Array) -> jax.Array:
    """m[b, t] = sum_{u <= t} v[b, u] mask[b, u] / sum_{u <= t} mask[b, u]: the mean over the response prefix
    through token t ([B, R]; `synthetic.per_step(..., "prefix")` at each step's last token)."""
    m = mask_br.astype(jnp.float32)
    return jnp.cumsum(values_br * m, axis=1) / jnp.maximum(jnp.cumsum(m, axis=1), 1.0)


def token_logits(prm: dict, cfg, prompt, prompt_mask, response, response_mask) -> jax.Array:
    """The oracle's logit z_t [B, R] (0 off-mask): a scalar-head PRM's r_phi ({"trunk", "head"}), or for a
    whole Qwen model (the likelihood head) the log-odds of its own probability of the token,
    z_t = log p_t - log(1 - p_t) with p_t = pi_phi(a_t | s_t): then the BCE trains the LM to give likely
    tokens to correct steps and unlikely ones to wrong steps (likelihood / unlikelihood). For a prefix oracle
    (`init_prefix_oracle`) z_t = scale * prefix_mean(log pi_phi)_t + bias: the BCE at the step ends then trains
    the LM so that the prefix readout of its log-probs classifies the steps (the ceiling for that readout)."""
    if "head" in prm:
        return logprobs.prm_token_rewards(prm, cfg, prompt, prompt_mask, response, response_mask)
    if "lm" in prm:  # prefix oracle: scale * (mean log pi over the prefix through t) + bias
        lp = logprobs.response_logprobs(prm["lm"], cfg, prompt, prompt_mask, response, response_mask,
                                        with_entropy=False)[0]
        return (prm["scale"] * prefix_mean(lp, response_mask) + prm["bias"]) * response_mask
    lp = logprobs.response_logprobs(prm, cfg, prompt, prompt_mask, response, response_mask, with_entropy=False)[0]
    lp = jnp.minimum(lp, -1e-6)  # p < 1: the log-odds stays finite
    return (lp - jnp.log(-jnp.expm1(lp))) * response_mask


def oracle_loss(prm: dict, cfg, batch: tuple) -> tuple[jax.Array, dict]:
    """Mean BCE of the oracle's logits (`token_logits`) against the labeller's targets over the tokens where
    `where` is 1 (every response token, or the step-end tokens only)."""
    prompt, prompt_mask, response, response_mask, targets, where = batch
    z = token_logits(prm, cfg, prompt, prompt_mask, response, response_mask)
    return losses.step_bce_loss(z, where * response_mask, targets)


def train_oracle_prm(prm: dict, cfg, traces: LabelledTraces, steps: int, batch: int = 64, lr: float = 1e-3,
                     seed: int = 0, clip: float = 1.0, log=None, log_every: int = 100,
                     targets_at: str = "all") -> tuple[dict, list[float]]:
    """`steps` AdamW steps of `oracle_loss` on random mini-batches of `batch` rows of `traces` (sampled
    without replacement within each pass), with targets at every response token (`targets_at="all"`) or at
    the step-end tokens only ("step_end": the tokens at which a step is scored). `log(step, mean loss of the last log_every steps, params)`
    is called every `log_every` steps when given (progress, learning curves). Returns (trained PRM, loss per step)."""
    if steps < 0 or batch < 1:
        raise ValueError(f"steps={steps}, batch={batch}: need steps >= 0, batch >= 1")
    if len(traces) == 0:
        raise ValueError("train_oracle_prm: no traces")
    if targets_at not in ("all", "step_end"):
        raise ValueError(f"targets_at={targets_at!r}: expected all or step_end")
    if targets_at == "step_end" and traces.ends is None:
        raise ValueError("targets_at='step_end' needs traces with ends (label_traces)")
    opt = optax.chain(optax.clip_by_global_norm(clip), optax.adamw(lr, weight_decay=0.0))

    @jax.jit
    def step(params, opt_state, mb):
        (loss, aux), g = jax.value_and_grad(oracle_loss, has_aux=True)(params, cfg, mb)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss, aux["step_acc"]

    params = jax.tree.map(jnp.asarray, prm)
    opt_state = opt.init(params)
    rng = np.random.default_rng(seed)
    b = min(batch, len(traces))
    order, pos, losses_ = rng.permutation(len(traces)), 0, []
    where = traces.ends if targets_at == "step_end" else np.ones_like(traces.response_mask)
    arrays = (traces.prompt, traces.prompt_mask, traces.response, traces.response_mask, traces.targets, where)
    for _ in range(steps):
        if pos + b > len(order):
            order, pos = rng.permutation(len(traces)), 0
        idx = order[pos:pos + b]
        pos += b
        params, opt_state, loss, _ = step(params, opt_state, tuple(a[idx] for a in arrays))
        losses_.append(float(loss))
        if log is not None and len(losses_) % log_every == 0:
            log(len(losses_), float(np.mean(losses_[-log_every:])), params)
    return params, losses_


@functools.lru_cache(maxsize=8)
def _reward_fn(cfg):
    """One jitted oracle-logit function per model config (`token_logits`; compiled once per batch shape)."""
    return jax.jit(lambda p, *a: token_logits(p, cfg, *a))


@functools.lru_cache(maxsize=8)
def _logprob_fn(cfg):
    """One jitted token log-prob function per model config."""
    return jax.jit(lambda p, *a: logprobs.response_logprobs(p, cfg, *a, with_entropy=False)[0])


def score_traces(prm: dict, cfg, traces: LabelledTraces, batch: int = 128) -> np.ndarray:
    """Token rewards / logits [B, R] (0 off-mask) of a scalar-head PRM, or the log-odds logits of a likelihood
    oracle (`token_logits`), on `traces`; for a prefix oracle its LM's log-probs (whose prefix readout is
    monotone in its logits)."""
    if "lm" in prm:
        return policy_logprobs(prm["lm"], cfg, traces, batch) * traces.response_mask
    return _in_batches(_reward_fn(cfg), prm, traces, batch)


def policy_logprobs(params: dict, cfg, traces: LabelledTraces, batch: int = 128) -> np.ndarray:
    """log pi(a_t | s_t) [B, R] of a policy (qwen params) for every response token of `traces`: the policy's
    own likelihood as a zero-shot token reward."""
    return _in_batches(_logprob_fn(cfg), params, traces, batch)


def _in_batches(fn, params, traces: LabelledTraces, batch: int) -> np.ndarray:
    """fn(params, prompt, prompt_mask, response, response_mask) -> [rows, R] over `traces` in batches of
    `batch` rows (the last one zero-padded: one shape per call)."""
    out = []
    n = len(traces)
    for s in range(0, n, batch):
        sl = slice(s, min(s + batch, n))
        args = [traces.prompt[sl], traces.prompt_mask[sl], traces.response[sl], traces.response_mask[sl]]
        pad = batch - (sl.stop - sl.start)
        if pad:  # one shape per call
            args = [np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) for a in args]
        out.append(np.asarray(fn(params, *args))[:sl.stop - sl.start])
    return np.concatenate(out) if out else np.zeros((0, traces.response.shape[1]), np.float32)


def per_trace_rewards(rewards: np.ndarray, traces: LabelledTraces) -> list[np.ndarray]:
    """Each row's rewards over its response characters (eos dropped), for `prm_eval.step_error_auroc`."""
    return [rewards[i, :len(t)] for i, t in enumerate(traces.texts)]


def corrupted_pairs(records: Sequence[dict], rng: Any, modulus: int,
                    propagate: bool = False) -> tuple[list[str], list[str], list[str]]:
    """(prompts, clean, corrupted): each record's first demonstration and a copy with one step's result
    changed (`synthetic.corrupt`; `propagate=True`: later lines continue consistently from the wrong value,
    like a policy's carried slip)."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    prompts, clean, bad = [], [], []
    for r in records:
        ref = r["metadata"].get("reference", r["experts"][0]) if "metadata" in r else r["experts"][0]
        prompts.append(r["prompt"])
        clean.append(ref)
        bad.append(synthetic.corrupt(ref, rng, modulus=modulus, propagate=propagate))
    return prompts, clean, bad


def corrupt_each(response: str, rng: Any, rate: float, modulus: int) -> str:
    """`response` with each well-formed step line's result independently changed with probability `rate`
    (`synthetic.corrupt`, not carried on: the next line keeps the true value, so every changed line is the
    only wrong step of its own). Many wrong steps per trace: the oracle sees enough local errors to learn the
    check (one corrupted step per trace leaves ~5% wrong step ends, and its pair accuracy stays at chance)."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    out = response
    for j, (text, _, _) in enumerate(synthetic.split_items(response)):
        if synthetic.is_step_line(text) and rng.random() < rate:
            out = synthetic.corrupt(out, rng, step=j, modulus=modulus)
    return out
