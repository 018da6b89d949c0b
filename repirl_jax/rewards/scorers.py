"""The one reward adapter: math (math-verify), code (sandboxed tests) and the synthetic checker behind one
call, used by training (`training_reward_fn`) and evaluation (`Scorers.score`)."""

from __future__ import annotations

from typing import Any, Callable

from repirl_jax.data import synthetic
from repirl_jax.rewards.code import CodeScorer
from repirl_jax.rewards.math import MathScorer

# Counters a training run logs per iteration (reward_<name>), from the scorers' BatchStats.
TRAINING_COUNTS = {"math": ("no_answer", "timeout", "error"), "code": ("no_code", "timeout", "crash")}


def _field(gt, name):
    return gt.get(name) if isinstance(gt, dict) else None


class Scorers:
    """Math and code scorers, started lazily, closed together."""

    def __init__(self, math_timeout_s: float, code_timeout_s: float, workers: int):
        self.math_timeout_s, self.code_timeout_s, self.workers = math_timeout_s, code_timeout_s, workers
        self._math = None
        self._code = None

    @property
    def math(self):
        if self._math is None:
            self._math = MathScorer(workers=self.workers, timeout_s=self.math_timeout_s)
        return self._math

    @property
    def code(self):
        if self._code is None:
            self._code = CodeScorer(workers=self.workers, timeout_s=self.code_timeout_s)
        return self._code

    def start(self, domain: str) -> None:
        """Build `domain`'s scorer now: math-verify's workers start in the background (their ~3 s of imports
        overlap the caller's next work, e.g. the first batch's compilation, instead of delaying its first
        score), and the code sandbox is probed here (an unusable sandbox fails before any generation)."""
        if domain in ("math", "code"):
            getattr(self, domain)  # the property builds the scorer, which starts its workers and returns

    def score(self, domain: str, responses: list[str], ground_truths: list[Any]) -> tuple[list[float], list, dict]:
        """(scores, extracted answers or None, counts) for a batch of one domain: synthetic, math or code
        (ground truth: the tests, with fn_name / starter_code where the problem has them)."""
        if domain == "synthetic":
            scores = [synthetic.score(r, g) for r, g in zip(responses, ground_truths)]
            return scores, [synthetic.extract_answer(r) for r in responses], {}
        if domain == "math":
            res = self.math.score_batch(responses, ground_truths)
            return res.scores, res.answers, res.stats.as_dict()
        if domain == "code":
            res = self.code.score_batch(responses, ground_truths,
                                        fn_names=[_field(g, "fn_name") for g in ground_truths],
                                        starter_codes=[_field(g, "starter_code") for g in ground_truths])
            return res.scores, [None] * len(responses), res.stats.as_dict()
        raise ValueError(f"reward kind / domain {domain!r}: expected synthetic, math or code")

    def close(self):
        for scorer in (self._math, self._code):
            if scorer is not None:
                scorer.close()


def training_reward_fn(scorers: Scorers, kind: str) -> Callable:
    """reward_fn(records, responses) -> (scores, counts) of a training run (records carry ground_truth)."""
    if kind not in ("synthetic", "math", "code"):
        raise ValueError(f"reward.kind={kind!r}: expected synthetic, math or code")

    def fn(records, texts):
        scores, _, stats = scorers.score(kind, list(texts), [r["ground_truth"] for r in records])
        return scores, {name: stats[f"n_{name}"] for name in TRAINING_COUNTS.get(kind, ())}
    return fn


def build_reward_fn(config):
    """(reward_fn, close) for the config's reward.kind (reward.workers, reward.timeout_s)."""
    r = config.reward
    scorers = Scorers(math_timeout_s=r.timeout_s, code_timeout_s=r.timeout_s, workers=r.workers)
    return training_reward_fn(scorers, r.kind), scorers.close
