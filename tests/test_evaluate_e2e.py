"""`python -m repirl_jax.evaluate` end to end on a tiny random Qwen2 with the real Qwen tokenizer."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import hf_models
from tests.test_tokenizer import QWEN_TOKENIZER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = ["math500", "aime24", "amc23", "minerva", "olympiadbench", "leetcode", "livecodebench"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "tiny_qwen2"
    hf_models.build("qwen2_untied_bias", str(path), vocab_size=151936)
    for name in os.listdir(QWEN_TOKENIZER):
        if name != "README.md":
            shutil.copy(os.path.join(QWEN_TOKENIZER, name), path / name)
    return str(path)


def _evaluate(model_dir, out, *extra):
    cmd = [sys.executable, "-m", "repirl_jax.evaluate", f"--hf_dir={model_dir}", f"--output_dir={out}",
           "--limit=2", "--config.eval.max_new_tokens=8", "--config.eval.batch_size=2",
           "--config.eval.max_prompt_len=384", "--config.model.dtype=float32", "--config.eval.math_timeout_s=5",
           *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XLA_FLAGS": ""})


def test_greedy_evaluation_writes_table_rows_and_resumes(model_dir, tmp_path):
    out = tmp_path / "out"
    r = _evaluate(model_dir, out, "--benchmarks=" + ",".join(BENCHMARKS))
    assert r.returncode == 0, r.stderr[-3000:]
    table = (out / "results.md").read_text()
    for name in BENCHMARKS:
        assert f"| {name} | 2 |" in table
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(len(row["responses"]) == 1 and row["scores"][0] in (0.0, 1.0)
                                      for row in rows)
        assert all(1 <= row["num_tokens"][0] <= 8 for row in rows)
    assert "**math average** | 10 |" in table and "**code average** | 4 |" in table
    assert "prompts truncated:" in r.stdout
    # A rerun resumes: nothing is generated again, the files keep their rows, the table is the same.
    before = {n: (out / f"{n}.jsonl").read_text() for n in BENCHMARKS}
    r = _evaluate(model_dir, out, "--benchmarks=" + ",".join(BENCHMARKS))
    assert r.returncode == 0, r.stderr[-3000:]
    assert {n: (out / f"{n}.jsonl").read_text() for n in BENCHMARKS} == before
    assert (out / "results.md").read_text().split("\n\n", 1)[1] == table.split("\n\n", 1)[1]


def test_sampling_with_majority_vote_and_pass_at_k(model_dir, tmp_path):
    out = tmp_path / "tts"
    r = _evaluate(model_dir, out, "--benchmarks=gsm8k", "--num_samples=4", "--temperature=0.8",
                  "--selection=majority")
    assert r.returncode == 0, r.stderr[-3000:]
    table = (out / "results.md").read_text()
    assert "pass@1" in table and "pass@4" in table and "majority@4" in table
    row = json.loads((out / "gsm8k.jsonl").read_text().splitlines()[0])
    assert len(row["responses"]) == 4 and "majority" in row["selected"]


def test_bad_arguments_are_refused(model_dir, tmp_path):
    r = _evaluate(model_dir, tmp_path / "x", "--benchmarks=gsm8k", "--num_samples=4", "--selection=best_of_n")
    assert r.returncode == 2 and "needs --prm_checkpoint" in r.stderr
    r = _evaluate(model_dir, tmp_path / "x", "--benchmarks=gsm8k", "--selection=majority")
    assert r.returncode == 2 and "needs --num_samples > 1" in r.stderr


def test_prm_selection_and_localisation_with_a_training_run(tmp_path):
    """evaluate on a training run directory: its policy samples, its PRM ranks (best-of-N, PRM-weighted
    vote) and draws the error-localisation pictures."""
    from repirl_jax import launch
    from tests.train_config import tiny_config
    run = tmp_path / "run"
    launch.run(tiny_config("repirl", **{"train.max_iterations": 1}), str(run), progress_bar=False)
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "repirl_jax.evaluate", f"--checkpoint={run}", "--benchmarks=synthetic",
           f"--output_dir={out}", "--limit=4", "--num_samples=4", "--temperature=1.0",
           "--selection=majority,best_of_n,prm_weighted,min_step", f"--prm_checkpoint={run}", "--localisation",
           "--config.eval.max_new_tokens=24", "--config.eval.max_prompt_len=12", "--config.eval.batch_size=4",
           "--config.model.dtype=float32"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    table = (out / "results.md").read_text()
    for metric in ("pass@4", "majority@4", "best_of_n@4", "prm_weighted@4", "min_step@4"):
        assert metric in table
    row = json.loads((out / "synthetic.jsonl").read_text().splitlines()[0])
    assert len(row["prm_scores"]) == 4 and len(row["prm_min_step"]) == 4
    assert set(row["selected"]) == {"majority", "best_of_n", "prm_weighted", "min_step"}
    low = max(range(4), key=lambda i: row["prm_min_step"][i])
    assert row["selected"]["min_step"] == row["scores"][low]
    # best-of-N picks the sample with the highest PRM score.
    best = max(range(4), key=lambda i: row["prm_scores"][i])
    assert row["selected"]["best_of_n"] == row["scores"][best]
    assert (out / "synthetic_localisation.png").stat().st_size > 1000
    assert "PRM token rewards" in (out / "synthetic_localisation.html").read_text()
