"""Early signal on hard problems: all-fail prompts queued with their PRM score, judged k iterations later."""
import json

import numpy as np
import pytest

from repirl_jax.evaluation.early_signal import EarlySignal
from repirl_jax.evaluation.prm_eval import auroc


class FakeTrainer:
    """evaluate() marks a record solved iff its id is in `solvable`."""

    def __init__(self, solvable):
        self.solvable, self.calls = set(solvable), []

    def evaluate(self, records, batch):
        self.calls.append([r["id"] for r in records])
        return {"scores": [1.0 if r["id"] in self.solvable else 0.0 for r in records]}


def test_observe_queues_all_fail_prompts_with_their_mean_process_score(tmp_path):
    n, R = 2, 4
    records = [{"id": f"p{i}"} for i in range(3)]
    outcome = np.array([0, 0, 1, 0, 0, 0], np.float32)  # p0 all fail, p1 one success, p2 all fail
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    process = np.arange(6 * R, dtype=np.float32).reshape(6, R) - 10.0
    w = EarlySignal(k=3, path=str(tmp_path / "es.jsonl"))
    assert w.observe(5, records, outcome, process, mask, n, keep=np.array([1, 1, 1])) == 2
    due = w.pending[8]
    assert [rec["id"] for _, rec, _ in due] == ["p0", "p2"]
    row_mean = lambda r: (process[r] * mask[r]).sum() / mask[r].sum()  # noqa: E731
    np.testing.assert_allclose(due[0][2], (row_mean(0) + row_mean(1)) / 2, rtol=1e-6)
    np.testing.assert_allclose(due[1][2], (row_mean(4) + row_mean(5)) / 2, rtol=1e-6)
    # filtered-out prompts are not queued
    assert w.observe(6, records, outcome, process, mask, n, keep=np.array([0, 1, 0])) == 0
    tr = FakeTrainer({"p2"})
    assert w.resolve(tr, 7) == 0 and tr.calls == []  # nothing due yet
    assert w.resolve(tr, 8) == 2 and tr.calls == [["p0", "p2"]]
    rows = [json.loads(line) for line in open(tmp_path / "es.jsonl")]
    assert [(r["id"], r["solved"], r["iteration"], r["due"]) for r in rows] == [("p0", False, 5, 8), ("p2", True, 5, 8)]
    assert w.auroc() == auroc([due[0][2], due[1][2]], [False, True]) == 1.0  # p2 scored higher and was solved
    assert w.summary()["early_signal_prompts"] == 2
    # a resumed run reads the lines already written
    assert len(EarlySignal(k=3, path=str(tmp_path / "es.jsonl")).rows) == 2
    with pytest.raises(ValueError):
        EarlySignal(k=0)


def test_demo_style_run_writes_early_signal(tmp_path):
    import os

    from repirl_jax import launch
    from repirl_jax.config import load_config_file
    c = load_config_file(os.path.join(os.path.dirname(__file__), "train_config.py"))
    c.algo = "repirl"
    c.train.update(max_iterations=3, early_signal_k=1, checkpoint_every=3)
    s = launch.run(c, str(tmp_path), progress_bar=False).summary
    assert s["early_signal_k"] == 1 and "early_signal_auroc" in s
    path = tmp_path / "early_signal.jsonl"
    rows = [json.loads(line) for line in open(path)] if path.exists() else []
    assert len(rows) == s["early_signal_prompts"] >= 4  # an untrained policy fails (nearly) every prompt
    assert {"iteration", "due", "id", "score", "solved"} <= set(rows[0])
    assert all(r["due"] == r["iteration"] + 1 <= 3 for r in rows)
