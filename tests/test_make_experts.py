"""make_experts: graded expert demonstrations -> the training JSONL launch reads (external responses and a
tiny model with the real tokenizer; resume; coverage; split)."""

import json
import os
import subprocess
import sys

import pytest

from repirl_jax import make_experts
from repirl_jax.data.prompts import load_prompt_set
from tests.test_new_user import MATH_TRAIN, REPO, tiny_qwen25


def _prompts(path, n):
    rows = [json.loads(line) for _, line in zip(range(n), open(MATH_TRAIN))]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def _external(path, rows):
    """Prompt 1 (named by its text): two correct, one wrong, a duplicate correct; 2-4 (by id): one correct
    each; 5-6: wrong."""
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            right = f"Therefore the answer is $\\boxed{{{r['answer']}}}$."
            if i == 0:
                f.write(json.dumps({"prompt": r["problem"], "responses": [right, "\\boxed{12345}", right,
                                                                             f"So \\boxed{{{r['answer']}}}"]}) + "\n")
            elif i < 4:
                f.write(json.dumps({"id": f"row-{i + 1}", "response": right}) + "\n")
            else:
                f.write(json.dumps({"id": f"row-{i + 1}", "response": "I give up: \\boxed{-99999}"}) + "\n")


def test_external_responses_graded_selected_split_and_loadable(tmp_path):
    rows = _prompts(tmp_path / "p.jsonl", 6)
    _external(tmp_path / "r.jsonl", rows)
    opts = make_experts.Options(prompts=str(tmp_path / "p.jsonl"), out=str(tmp_path / "out"),
                                responses=str(tmp_path / "r.jsonl"), prompt_field="problem", answer_field="answer",
                                experts_per_prompt=2, val_fraction=0.0, score_workers=1, progress=False)
    cov = make_experts.run(opts)
    assert cov["prompts"] == 6 and cov["responses_graded"] == 9
    assert cov["prompts_with_a_correct_response"] == 4
    assert cov["correct_responses_per_prompt"] == {"0": 2, "1": 3, "3": 1}
    assert cov["train_prompts"] == 4 and cov["unsolved_dropped"] == 2 and cov["val_prompts"] == 0
    train, report = load_prompt_set(cov["files"]["train"])  # what launch reads, experts required
    assert report.kept == 4 and not report.skipped
    first = train[0]
    assert first["id"] == "row-1" and first["prompt"] == rows[0]["problem"] and first["ground_truth"] == rows[0]["answer"]
    assert first["experts"] == [f"Therefore the answer is $\\boxed{{{rows[0]['answer']}}}$.",
                                f"So \\boxed{{{rows[0]['answer']}}}"]  # correct, distinct, at most 2
    unsolved = [json.loads(line) for line in open(cov["files"]["unsolved"])]
    assert [u["id"] for u in unsolved] == ["row-5", "row-6"]


def test_benchmark_short_name_as_prompts(tmp_path):
    """--prompts=math_train reads the shipped file in its own layout (problem, answer; ids math_train-N); its
    upstream row without an answer (line 887) cannot be graded: skipped and counted."""
    from repirl_jax.data import benchmarks
    gold = benchmarks.load("math_train", limit=2)
    (tmp_path / "r.jsonl").write_text("".join(
        json.dumps({"id": g["id"], "response": f"So \\boxed{{{g['ground_truth']}}}."}) + "\n" for g in gold))
    opts = make_experts.Options(prompts="math_train", out=str(tmp_path / "out"), responses=str(tmp_path / "r.jsonl"),
                                limit=887, val_fraction=0.0, score_workers=1, batch_size=256, progress=False)
    cov = make_experts.run(opts)
    assert cov["prompts"] == 887 and cov["bad_rows_skipped"] == {"no ground truth": 1}
    assert cov["train_prompts"] == 2 and cov["unsolved_dropped"] == 885
    train, _ = load_prompt_set(cov["files"]["train"])
    assert [(t["id"], t["prompt"], t["ground_truth"]) for t in train] == [
        (g["id"], g["problem"], g["ground_truth"]) for g in gold]
    with pytest.raises(ValueError, match="leetcode is a code benchmark: give --domain=code"):
        make_experts.run(make_experts.Options(prompts="leetcode", out=str(tmp_path / "o2"),
                                              responses=str(tmp_path / "r.jsonl")))


def test_where_picks_the_first_matching_prompts(tmp_path):
    """--where=difficulty<=1 --limit=3: the first three MATH-train problems of difficulty <= 1, in file order;
    conditions combine, compare as numbers or text, and a malformed one is a message."""
    from repirl_jax.data import benchmarks
    easy = [r for r in benchmarks.load("math_train", on_empty="keep") if r["metadata"].get("difficulty", 9) <= 1][:3]
    assert len(easy) == 3
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"id": g["id"], "response": "no"}) + "\n" for g in easy))
    opts = make_experts.Options(prompts="math_train", out=str(tmp_path / "out"), responses=str(tmp_path / "r.jsonl"),
                                limit=3, where=("difficulty<=1",), val_fraction=0.0, score_workers=1, progress=False)
    cov = make_experts.run(opts)
    graded = [json.loads(line)["id"] for line in open(tmp_path / "out" / "graded.jsonl")]
    assert cov["prompts"] == 3 and graded == [g["id"] for g in easy]
    match = make_experts.parse_where(["difficulty>=2", "type==Algebra"])
    assert match({"metadata": {"difficulty": 2.0, "type": "Algebra"}})
    assert not match({"metadata": {"difficulty": 2.0, "type": "Geometry"}})
    assert not match({"metadata": {"type": "Algebra"}})  # no such field: no match
    with pytest.raises(ValueError, match=r"--where='difficulty~1': expected FIELD<=VALUE"):
        make_experts.parse_where(["difficulty~1"])


def test_split_is_stable_and_by_fraction():
    ids = [f"row-{i}" for i in range(2000)]
    val = [i for i in ids if make_experts.is_validation(i, 0.1)]
    assert 150 < len(val) < 250 and val == [i for i in ids if make_experts.is_validation(i, 0.1)]
    assert not any(make_experts.is_validation(i, 0.0) for i in ids)


def test_unknown_response_rows_are_errors(tmp_path):
    rows = _prompts(tmp_path / "p.jsonl", 2)
    (tmp_path / "r.jsonl").write_text(json.dumps({"id": "nope", "response": "x"}) + "\n")
    opts = make_experts.Options(prompts=str(tmp_path / "p.jsonl"), out=str(tmp_path / "o"),
                                responses=str(tmp_path / "r.jsonl"), prompt_field="problem", answer_field="answer")
    with pytest.raises(ValueError, match="r.jsonl line 1: matches no prompt"):
        make_experts.run(opts)
    assert rows


def test_sampling_from_a_tiny_model_resumes(tmp_path):
    """k samples per prompt from a tiny Qwen2.5-format model with the real tokenizer (our sampler); a rerun
    in the same directory resumes: graded prompts are not sampled again."""
    model = tiny_qwen25(tmp_path / "model", dtype="float32")
    _prompts(tmp_path / "p.jsonl", 3)
    opts = make_experts.Options(prompts=str(tmp_path / "p.jsonl"), out=str(tmp_path / "out"), model=model,
                                prompt_field="problem", answer_field="answer", k=2, max_new_tokens=6,
                                max_prompt_len=160, batch_size=2, limit=2, val_fraction=0.0, dtype="float32",
                                score_workers=1, progress=False)
    sampled = []
    sample, _ = make_experts.model_sampler(opts)  # what run() builds from opts.model, counted here

    def counting(batch):
        sampled.extend(r["id"] for r in batch)
        return sample(batch)
    cov = make_experts.run(opts, sample=counting)
    graded = [json.loads(line) for line in open(tmp_path / "out" / "graded.jsonl")]
    assert [g["id"] for g in graded] == ["row-1", "row-2"] and sampled == ["row-1", "row-2"]
    assert all(len(g["responses"]) == 2 and len(g["scores"]) == 2 for g in graded)
    assert cov["responses_graded"] == 4 and cov["prompts"] == 2
    # prompts without a correct response are flagged in unsolved.jsonl, not written to train.jsonl
    assert cov["unsolved_dropped"] == 2 - cov["train_prompts"]

    sampled.clear()
    opts.limit = 3
    cov = make_experts.run(opts, sample=counting)
    assert sampled == ["row-3"] and cov["prompts"] == 3
    again = [json.loads(line) for line in open(tmp_path / "out" / "graded.jsonl")]
    assert again[:2] == graded  # the earlier rows are untouched


def test_cli_external_responses(tmp_path):
    """The README's make_experts command with external responses, as a user runs it."""
    rows = _prompts(tmp_path / "p.jsonl", 6)
    _external(tmp_path / "r.jsonl", rows)
    r = subprocess.run([sys.executable, "-m", "repirl_jax.make_experts", f"--prompts={tmp_path / 'p.jsonl'}",
                        "--prompt_field=problem", "--answer_field=answer", f"--responses={tmp_path / 'r.jsonl'}",
                        f"--out={tmp_path / 'out'}", "--score_workers=1", "--noprogress"],
                       cwd=REPO, env={**os.environ, "XLA_FLAGS": ""}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| prompts with a correct response | 4 |" in r.stdout
    assert os.path.exists(tmp_path / "out" / "train.jsonl") and os.path.exists(tmp_path / "out" / "coverage.json")
