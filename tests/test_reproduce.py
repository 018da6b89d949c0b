"""tools/reproduce.py on a tiny config: runs, tables and the claims table with paired seeds."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reproduce_tiny_writes_claims(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "reproduce.py"), "--seeds=0,1", "--iterations=2",
         "--methods=repirl,rloo,repirl_likelihood", f"--config={os.path.join(ROOT, 'tests', 'train_config.py')}",
         f"--out={tmp_path}", "--rerank_prompts=4", "--early_signal_k=1"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in open(tmp_path / "runs.jsonl")]
    assert sorted((r["method"], r["seed"]) for r in rows) == [("repirl", 0), ("repirl", 1), ("repirl_likelihood", 0),
                                                             ("repirl_likelihood", 1), ("rloo", 0), ("rloo", 1)]
    rep = [r for r in rows if r["method"].startswith("repirl")]  # the scalar and the likelihood PRM rerank
    assert all(r["rerank"] and "prm_weighted:rank" in r["rerank"]["16"] for r in rep)
    assert all(r["early_signal_prompts"] is not None for r in rep)
    claims = (tmp_path / "claims.md").read_text()
    line = next(x for x in claims.splitlines() if x.startswith("| rePIRL > RLOO"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "2" and cells[4] in ("holds", "does not hold", "inconclusive")
    assert "| importance weights > uniform weights | 0 | - | - | not run |" in claims
    line = next(x for x in claims.splitlines() if x.startswith("|   the same, likelihood PRM (repirl_likelihood)"))
    assert line.split("|")[2].strip() == "2"
    versus = (tmp_path / "versus.md").read_text()
    line = next(x for x in versus.splitlines() if x.startswith("| repirl - rloo |"))
    assert line.split("|")[2].strip() == "2" and line.split("|")[5].strip() in ("holds", "does not hold", "inconclusive")
    table = (tmp_path / "table.md").read_text()
    assert any(x.startswith("| repirl_likelihood | 2 |") for x in table.splitlines()), table
    # a finished run is not run again: the second call only rewrites the tables
    again = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "reproduce.py"), "--seeds=0,1", "--iterations=2",
         "--methods=repirl,rloo,repirl_likelihood", f"--config={os.path.join(ROOT, 'tests', 'train_config.py')}",
         f"--out={tmp_path}", "--rerank_prompts=4"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "claims.md").read_text() == claims
