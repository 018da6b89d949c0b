"""The oracle PRM (supervised per-token step labels) and the PRM quality suite on a tiny run."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

from repirl_jax.data import synthetic as S
from repirl_jax.evaluation import oracle_prm, prm_eval
from repirl_jax.models import config as mconfig
from repirl_jax.models import heads, qwen

PROMPT = "07*03-05+08=?\n"
GOOD = "07*03=21\n21-05=16\n16+08=24\n#24"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_token_targets():
    tok = S.get_tokenizer()
    bad = "07*03=21\n21-05=15\n15+08=23\n#23"
    fixed = "07*03=21\n21-05=15\n21-05=16\n16+08=24\n#24"
    tr = oracle_prm.label_traces([PROMPT] * 3, [GOOD, bad, fixed], tok, 16, 48, 100)
    y, m = tr.targets, tr.response_mask
    assert m.sum(1).tolist() == [len(GOOD) + 1, len(bad) + 1, len(fixed) + 1]  # + eos
    assert y[0, :len(GOOD) + 1].tolist() == [1.0] * (len(GOOD) + 1)
    assert y[1, :len(bad) + 1].tolist() == [1.0] * 9 + [0.0] * (len(bad) - 9 + 1)  # eos: wrong answer
    assert y[2, :len(fixed) + 1].tolist() == [1.0] * 9 + [0.0] * 9 + [1.0] * (len(fixed) - 18 + 1)
    assert (y[m == 0] == 0).all()
    # step-end tokens: each line's newline, the answer line's last character, and the eos
    e = tr.ends[0, :len(GOOD) + 1]
    assert np.flatnonzero(e).tolist() == [8, 17, 26, len(GOOD) - 1, len(GOOD)]
    assert (tr.ends[m == 0] == 0).all() and np.flatnonzero(tr.ends[2]).tolist()[:3] == [8, 17, 26]


def test_oracle_loss_is_bce_and_training_lowers_it():
    cfg = mconfig.preset("tiny-qwen3", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, intermediate_size=64, vocab_size=32).replace(dtype="float32")
    prm = {"trunk": qwen.init_params(cfg, jax.random.key(0)), "head": heads.init_scalar_head(cfg, jax.random.key(1))}
    recs = S.make_splits(0, 16, 0, 0, num_steps=(2, 2))["train"]
    rng = np.random.default_rng(0)
    p, clean, bad = oracle_prm.corrupted_pairs(recs, rng, 100)
    tr = oracle_prm.label_traces(p + p, clean + bad, S.get_tokenizer(), 12, 24, 100)
    z = oracle_prm.score_traces(prm, cfg, tr, batch=8)
    y, m = tr.targets, tr.response_mask
    ref = -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 / (1 + np.exp(z))))
    arrays = (tr.prompt, tr.prompt_mask, tr.response, tr.response_mask, tr.targets)
    loss, _ = oracle_prm.oracle_loss(prm, cfg, arrays + (np.ones_like(m),))
    np.testing.assert_allclose(float(loss), (ref * m).sum() / m.sum(), rtol=1e-4)
    loss_end, _ = oracle_prm.oracle_loss(prm, cfg, arrays + (tr.ends,))  # step-end tokens only
    np.testing.assert_allclose(float(loss_end), (ref * tr.ends).sum() / tr.ends.sum(), rtol=1e-4)
    trained, log = oracle_prm.train_oracle_prm(prm, cfg, tr, steps=40, batch=16, lr=3e-3, seed=0)
    assert len(log) == 40 and np.mean(log[-5:]) < 0.9 * np.mean(log[:5])
    # trained on these traces, it ranks their correct steps above their wrong ones
    r = oracle_prm.per_trace_rewards(oracle_prm.score_traces(trained, cfg, tr, batch=8), tr)
    assert prm_eval.step_error_auroc(tr.prompts, tr.texts, r, 100, "last")["auroc_all_steps"] > 0.6
    _, log_end = oracle_prm.train_oracle_prm(prm, cfg, tr, steps=40, batch=16, lr=3e-3, seed=0, targets_at="step_end")
    assert np.mean(log_end[-5:]) < 0.9 * np.mean(log_end[:5])


def test_likelihood_oracle_logits_are_the_log_odds_of_the_token_probability():
    """A whole Qwen model as the oracle: z_t = log p_t - log(1 - p_t), p_t = softmax(logits)[a_t] (numpy)."""
    from repirl_jax.models import logprobs
    cfg = mconfig.preset("tiny-qwen3", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, intermediate_size=64, vocab_size=32).replace(dtype="float32")
    params = qwen.init_params(cfg, jax.random.key(0))
    recs = S.make_splits(0, 8, 0, 0, num_steps=(2, 2))["train"]
    p, clean, bad = oracle_prm.corrupted_pairs(recs, np.random.default_rng(0), 100)
    tr = oracle_prm.label_traces(p + p, clean + bad, S.get_tokenizer(), 12, 24, 100)
    z = oracle_prm.score_traces(params, cfg, tr, batch=8)
    hidden = logprobs.sequence_hidden(params, cfg, tr.prompt, tr.prompt_mask, tr.response, tr.response_mask)
    logits = np.asarray(qwen.lm_logits(params, cfg, hidden), np.float64)[:, tr.prompt.shape[1] - 1:-1]
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    pt = np.take_along_axis(prob, tr.response[..., None], -1)[..., 0]
    ref = (np.log(pt) - np.log1p(-pt)) * tr.response_mask
    np.testing.assert_allclose(z, ref, rtol=1e-3, atol=1e-3)
    trained, log = oracle_prm.train_oracle_prm(params, cfg, tr, steps=30, batch=16, lr=3e-3, seed=0)
    assert np.mean(log[-5:]) < 0.9 * np.mean(log[:5])  # the BCE falls: the LM learns the labels
    # prefix oracle: z_t = scale * (mean log p over the response prefix through t) + bias
    pre = oracle_prm.init_prefix_oracle(params)
    pre = {**pre, "scale": np.float32(2.0), "bias": np.float32(0.5)}
    lp = np.log(pt) * tr.response_mask
    prefix = np.cumsum(lp, 1) / np.maximum(np.cumsum(tr.response_mask, 1), 1)
    z_pre = np.asarray(oracle_prm.token_logits(pre, cfg, tr.prompt, tr.prompt_mask, tr.response, tr.response_mask))
    np.testing.assert_allclose(z_pre, (2.0 * prefix + 0.5) * tr.response_mask, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(oracle_prm.score_traces(pre, cfg, tr, batch=8), lp, rtol=1e-3, atol=1e-3)
    _, log = oracle_prm.train_oracle_prm(oracle_prm.init_prefix_oracle(params), cfg, tr, steps=30, batch=16,
                                         lr=3e-3, seed=0, targets_at="step_end")
    assert np.mean(log[-5:]) < 0.9 * np.mean(log[:5])


def test_pair_accuracy():
    bad = S.corrupt(GOOD, np.random.default_rng(0), step=1)
    ra = np.zeros(len(GOOD))
    rb = np.zeros(len(bad))
    rb[9:18] = -1.0  # the corrupted step scores lower: a win
    assert prm_eval.pair_accuracy([PROMPT], [GOOD], [bad], [ra], [rb], 100, "last") == 1.0
    assert prm_eval.pair_accuracy([PROMPT], [GOOD], [bad], [ra], [-rb], 100, "last") == 0.0
    assert prm_eval.pair_accuracy([PROMPT], [GOOD], [bad], [ra], [np.zeros(len(bad))], 100, "mean") == 0.5


def test_prm_quality_tiny_run(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "prm_quality.py"), "--seeds=0", "--iterations=2",
         "--oracle_steps=3", "--test_prompts=4", "--oracle_train_prompts=4", "--oracle_pair_prompts=8",
         "--methods=repirl", "--variant=repirl_e2:irl.prm_epochs=2;prm.lr=1e-3", "--curve_every=1",
         f"--config={os.path.join(ROOT, 'tests', 'train_config.py')}", f"--out={tmp_path}",
         "--set=data.synthetic.n_test=8"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    keys = [kv.split("=")[0] for kv in last.split()]
    assert keys == ["oracle_auroc", "repirl_auroc", "floor_auroc"], last
    vals = [float(kv.split("=")[1]) for kv in last.split()]
    assert all(np.isnan(v) or 0.0 <= v <= 1.0 for v in vals)
    table = (tmp_path / "table.md").read_text()
    for row in ("| oracle |", "| repirl |", "| repirl_e2 |", "| policy_logp |", "| position |", "| floor |"):
        assert row in table, row
    assert "step-error AUROC (prefix)" in table and "within-position AUROC" in table
    res = json.loads((tmp_path / "results.json").read_text())["per_seed"]["0"]
    # --methods=repirl has no repirl_likelihood (the default --headline_repirl): the last line reports repirl, and says so
    assert out.stdout.strip().splitlines()[-2].startswith("repirl_auroc below: repirl ("), out.stdout[-500:]
    np.testing.assert_allclose(vals[1], res["repirl"]["auroc"], atol=5e-4, equal_nan=True)
    again = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prm_quality.py"),
                            f"--from_results={tmp_path / 'results.json'}", "--headline_repirl=repirl"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == last  # the saved run's table and line, nothing trained
    assert "| repirl_e2 |" in again.stdout
    assert res["position"]["pair_acc"] == 0.5  # a clean and a corrupted twin have the same length
    assert res["repirl_e2"]["overrides"] == {"algo": "repirl", "irl.prm_epochs": "2", "prm.lr": "1e-3"}
    assert [p["iteration"] for p in res["repirl"]["curve"]] == [1]  # --curve_every=1, 2 iterations
    assert res["oracle"]["curve"] == [] or "train_loss" in res["oracle"]["curve"][0]


def test_prm_quality_rejects_a_bad_variant(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prm_quality.py"), "--variant=nocolon",
                          f"--out={tmp_path}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode != 0 and "--variant" in out.stderr
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prm_quality.py"),
                          f"--from_results={tmp_path / 'missing.json'}"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode != 0 and "--from_results" in out.stderr and "no such file" in out.stderr


def test_corrupt_each_changes_results_only_and_keeps_true_left_sides():
    rng = np.random.default_rng(0)
    ref = GOOD
    seen = set()
    for _ in range(50):
        bad = oracle_prm.corrupt_each(ref, rng, 0.5, 100)
        lab = S.label_steps(PROMPT, bad)
        wrong = [i for i, ok in enumerate(lab.correct) if not ok]
        seen.add(len(wrong))
        for i, (a, b) in enumerate(zip(ref.split("\n"), bad.split("\n"))):
            assert a.split("=")[0] == b.split("=")[0]  # left sides (and the answer line) unchanged
            assert (a != b) == (i in wrong)  # exactly the changed lines are wrong: nothing carried
    assert seen >= {0, 1, 2}  # 0..3 corrupted lines at rate 0.5
    assert oracle_prm.corrupt_each(ref, rng, 0.0, 100) == ref
