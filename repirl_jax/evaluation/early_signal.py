"""Early signal on hard problems (paper section 1, METHOD.md section 5): when all n rollouts of a prompt fail
at iteration i, does the PRM's score of those failures predict whether the policy solves that prompt k
iterations later?

    watch = EarlySignal(k=10, path=WORKDIR/early_signal.jsonl)
    for it in ...:
        trainer.iteration(it)
        watch.after_iteration(trainer, it)         # record all-fail prompts; greedy-check the ones due now
    watch.auroc()                                  # P(score of a later-solved prompt > an unsolved one)

Score of a prompt at iteration i: the mean over its n rollouts of the token-mean process reward
(`Batch.process`, the PRM after iteration i's reward-model step). Solved at i + k: the policy's greedy
response at the end of iteration i + k is correct. Prompts still due when the run ends (i + k past its last
iteration) are not judged. One JSON line per judged prompt: {"iteration", "due", "id", "score", "solved"}.
A resumed run keeps the lines already written; prompts pending at the interruption are dropped.
"""

from __future__ import annotations

import json
import os

import numpy as np

from repirl_jax.evaluation.prm_eval import auroc
from repirl_jax.runtime import distributed


class EarlySignal:
    def __init__(self, k: int, path: str | None = None, eval_batch: int = 32):
        if k < 1:
            raise ValueError(f"early signal: k={k} must be >= 1")
        self.k, self.path, self.eval_batch = int(k), path, int(eval_batch)
        self.pending: dict[int, list[tuple[int, dict, float]]] = {}
        self.rows: list[dict] = []
        if path and os.path.exists(path):
            self.rows = [json.loads(line) for line in open(path) if line.strip()]

    def observe(self, it: int, records, outcome, process, mask, n: int, keep=None) -> int:
        """Queue the prompts of iteration `it` whose n rollouts all failed; returns how many."""
        outcome = np.asarray(outcome, np.float32).reshape(len(records), n)
        m = np.asarray(mask, np.float32)
        per_row = (np.asarray(process, np.float32) * m).sum(1) / np.maximum(m.sum(1), 1.0)
        score = per_row.reshape(len(records), n).mean(1)
        keep = np.ones(len(records)) if keep is None else np.asarray(keep)
        hard = [i for i in range(len(records)) if keep[i] > 0 and outcome[i].max() < 1.0]
        self.pending.setdefault(it + self.k, []).extend((it, records[i], float(score[i])) for i in hard)
        return len(hard)

    def resolve(self, trainer, it: int) -> int:
        """Greedy-check the prompts due at iteration `it`; returns how many were judged."""
        due = self.pending.pop(it, [])
        if not due:
            return 0
        solved = trainer.evaluate([rec for _, rec, _ in due], self.eval_batch)["scores"]
        new = [{"iteration": i, "due": it, "id": rec.get("id"), "score": s, "solved": float(ok) >= 1.0}
               for (i, rec, s), ok in zip(due, solved)]
        self.rows += new
        if self.path:
            with open(self.path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
        return len(new)

    def after_iteration(self, trainer, it: int) -> None:
        """`observe` the batch trainer.iteration(it) just used (if it has rollouts), then `resolve` iteration it."""
        b = trainer.last_batch
        if b is not None and b.it == it and b.process is not None:
            process = distributed.to_host(b.process)  # every process calls it (a gather across processes)
            self.observe(it, b.records, b.outcome, process, b.rollouts.response_mask, trainer.n, b.keep)
        self.resolve(trainer, it)

    def auroc(self) -> float:
        """AUROC of the scores for later-solved vs still-unsolved prompts (nan if either class is empty)."""
        return auroc([r["score"] for r in self.rows], [r["solved"] for r in self.rows])

    def summary(self) -> dict:
        solved = sum(r["solved"] for r in self.rows)
        return {"early_signal_k": self.k, "early_signal_prompts": len(self.rows), "early_signal_solved": solved,
                "early_signal_auroc": self.auroc()}
