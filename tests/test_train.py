"""The training loop: every algorithm runs, resumes exactly after SIGKILL, validates its config, exports."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repirl_jax import algorithms, launch
from repirl_jax.checkpoints import run_dirs
from repirl_jax.models import logprobs
from repirl_jax.training import build, train
from repirl_jax.training.metrics import read_metrics
from tests.train_config import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("time_", "tokens_per_s")


def _without_timing(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


@pytest.mark.parametrize("algo", algorithms.names())  # every registered method
def test_two_iterations_of_every_algorithm(tmp_path, algo):
    summary = launch.run(tiny_config(algo), str(tmp_path), progress_bar=False).summary
    rows = read_metrics(str(tmp_path))
    assert [r["iteration"] for r in rows] == [1, 2]
    for r in rows:
        assert all(np.isfinite(v) for v in r.values() if isinstance(v, float)), r
        assert "val_accuracy" in r and "policy_grad_norm" in r
    if algo != "bc":
        assert {"rollout_acc", "response_len", "time_rollout", "tokens_per_s"} <= set(rows[0])
    if algo not in ("bc", "kto"):
        assert rows[0]["logp_diff_sampler_vs_trainer"] < 1e-4  # sampler and trainer log-probs agree
    if algo in ("repirl", "prime", "airl_dense", "math_shepherd"):  # the synthetic task's PRM report
        assert 0.0 <= summary["prm_auroc_all_steps"] <= 1.0 and summary["prm_steps"] > 0
        assert os.path.getsize(summary["localisation_png"]) > 1000
        assert "wrong traces" in open(summary["localisation_html"]).read()
    if algo == "repirl":
        assert {"irl_ess", "irl_num_pos", "irl_num_neg", "irl_rbar_pos", "irl_rbar_neg", "prm_grad_norm"} <= set(rows[0])
        assert rows[0]["irl_num_pos"] >= 8  # 4 prompts x 2 expert demonstrations at least
    if algo == "ppo":
        assert "policy_value_loss" in rows[0]
    if algo == "airl_dense":
        assert {"prm_disc_acc", "prm_loss", "prm_grad_norm"} <= set(rows[0])
    if algo == "math_shepherd":
        assert {"prm_step_acc", "shepherd_prefixes", "shepherd_sampled_tokens", "shepherd_label_mean"} <= set(rows[0])
        assert all(r["shepherd_sampled_tokens"] >= r["shepherd_prefixes"] for r in rows)
    assert summary["final_iteration"] == 2 and summary["nonfinite_updates_skipped"] == 0


def test_prm_micro_batch_accumulation_equals_single_pass(tmp_path):
    """The two-pass PRM step (weights first, then accumulated gradients) and the one-pass step give the
    same PRM after an iteration."""
    results = []
    for micro in (16, 4):  # 4 prompts x (2 rollouts + 2 experts) = 16 rows: one pass, then 4 micro-batches
        # adam_eps = 1 makes the first update ~lr * g, linear in the gradient: the bias gradient is 0 up to
        # rounding (sum_N w_hat - 1 = 0), and with the default eps Adam would turn that rounding into +-lr.
        c = tiny_config("repirl", **{"prm.micro_batch": micro, "train.max_iterations": 1, "prm.adam_eps": 1.0})
        tr = launch.run(c, str(tmp_path / f"m{micro}"), progress_bar=False).trainer
        results.append(jax.tree.map(np.asarray, tr.state["prm"]))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def _launch_cmd(workdir, *extra):
    return [sys.executable, "-m", "repirl_jax.launch", "--config=tests/train_config.py", f"--workdir={workdir}",
            *extra]


def kill_and_relaunch(tmp_path, over, iterations: int, kill_after: int):
    """A reference run of `iterations`, and the same command SIGKILLed once `kill_after` metrics lines are
    written, then relaunched: (the relaunch's CompletedProcess, its metrics, the reference's metrics)."""
    env = {**os.environ, "XLA_FLAGS": ""}
    over = [f"--config.train.max_iterations={iterations}", *over]
    ref = subprocess.run(_launch_cmd(tmp_path / "ref", *over), cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / "run"
    proc = subprocess.Popen(_launch_cmd(run, *over), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= kill_after:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len((run / "metrics.jsonl").read_text().splitlines())
    assert killed_at < iterations, "the run finished before it could be killed"
    again = subprocess.run(_launch_cmd(run, *over), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    return again, read_metrics(str(run)), read_metrics(str(tmp_path / "ref"))


def test_sigkill_and_relaunch_ends_with_the_same_metrics(tmp_path):
    again, rows, ref = kill_and_relaunch(tmp_path, ["--config.train.async_checkpoint=True"], 5, 3)
    assert "resumed from" in again.stderr
    assert _without_timing(rows) == _without_timing(ref)


def test_config_overrides_on_the_command_line(tmp_path):
    r = subprocess.run(_launch_cmd(tmp_path, "--config.train.max_iterations=1", "--config.algo=rloo"), cwd=REPO,
                       env={**os.environ, "XLA_FLAGS": ""}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(str(tmp_path))
    assert len(rows) == 1 and "irl_ess" not in rows[0]
    assert json.load(open(tmp_path / "summary.json"))["config"]["algo"] == "rloo"
    assert "| checkpoints |" in r.stdout


def test_checkpoint_written_by_the_trainer_exports_to_hf(tmp_path):
    import transformers
    launch.run(tiny_config("repirl", **{"train.max_iterations": 1}), str(tmp_path / "run"), progress_bar=False)
    for which in ("policy", "prm"):
        dst = tmp_path / f"hf_{which}"
        r = subprocess.run([sys.executable, "tools/convert_hf.py", "--direction=checkpoint_to_hf",
                            f"--src={tmp_path / 'run'}", f"--dst={dst}", f"--which={which}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "XLA_FLAGS": ""})
        assert r.returncode == 0, r.stderr[-2000:]
        model = transformers.AutoModelForCausalLM.from_pretrained(str(dst))
        assert model.config.model_type == "qwen3"
    assert json.load(open(tmp_path / "hf_prm" / "prm_head.json"))["step"] == 1


def test_startup_validation_says_what_to_change():
    cases = [
        ({"policy.minibatch_prompts": 3}, "policy.minibatch_prompts=3 does not divide data.prompts_per_iter=4"),
        ({"policy.micro_batch": 3}, "policy.micro_batch=3 rows does not divide"),
        ({"rollout.n": 3, "policy.micro_batch": 2, "prm.micro_batch": 5}, "would split a group of n=3"),
        ({"mesh.data": 3}, "needs|has 3 devices"),
        ({"rollout.max_response_len": 200}, "the KV cache cannot hold it"),
        ({"algo": "repirl", "data.experts_per_prompt": 0}, "needs expert demonstrations"),
        ({"algo": "sft"}, "algo='sft'"),
        ({"algo": "airl_dense", "data.experts_per_prompt": 0, "prm.micro_batch": 2}, "needs expert demonstrations"),
        ({"algo": "airl_dense", "prm.head": "implicit"}, "needs prm.head=scalar"),
        ({"algo": "math_shepherd", "prm.head": "likelihood"}, "needs prm.head=scalar"),
        ({"algo": "repirl", "prm.head": "implicit"}, "needs prm.head=scalar"),
        ({"algo": "airl_dense", "airl.perturbed_negatives": True, "data.train": "x.jsonl"},
         "needs data.train=synthetic"),
        ({"algo": "airl_dense", "airl.perturbed_negatives": True, "prm.micro_batch": 5}, "6 rows per prompt"),
        ({"algo": "math_shepherd", "rollout.max_response_len": 60}, "2 \\* max_response_len"),
        ({"algo": "math_shepherd", "shepherd.label": "fuzzy"}, "shepherd.label='fuzzy'"),
    ]
    for over, message in cases:
        with pytest.raises(train.ConfigError, match=message):
            train.validate(tiny_config(**over), num_devices=8 if "mesh.data" not in over else 1)


def test_nonfinite_updates_are_skipped_then_the_run_stops(tmp_path):
    c = tiny_config("rloo", **{"policy.lr": float("nan"), "train.max_nonfinite_in_a_row": 3,
                               "train.max_iterations": 3})
    with pytest.raises(FloatingPointError, match="3 non-finite policy updates in a row"):
        launch.run(c, str(tmp_path), progress_bar=False)


def test_bad_training_rows_are_named_or_skipped_and_counted(tmp_path):
    from repirl_jax.data.prompts import PromptDataError, load_prompt_set
    rows = [{"prompt": "1+1=?", "ground_truth": "2", "experts": ["1+1=2\n#2"]},
            {"prompt": "2+2=?", "ground_truth": "4"},
            {"prompt": "3+3=?", "ground_truth": "6", "experts": [""]},
            {"prompt": "4+4=?", "ground_truth": "8", "experts": ["4+4=8\n#8"]}]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(PromptDataError, match=r"train.jsonl line 2: missing field 'experts'"):
        load_prompt_set(str(path))
    records, report = load_prompt_set(str(path), on_bad_row="skip")
    assert [r["prompt"] for r in records] == ["1+1=?", "4+4=?"]
    assert report.rows == 4 and report.kept == 2 and sum(report.skipped.values()) == 2
    assert any("line 3: field 'experts'[0] is an empty" in e for e in report.first_errors)


def test_long_prompts_are_skipped_and_counted(tmp_path):
    c = tiny_config("rloo", **{"rollout.max_prompt_len": 10, "train.max_iterations": 1,
                               "data.synthetic.num_steps": (1, 2)})
    report = launch.run(c, str(tmp_path), progress_bar=False).summary["data_report"]
    assert report["train_long_prompts"] > 0 and report["train_prompts_skipped"] == report["train_long_prompts"]


def test_chunked_log_probs_equal_unchunked():
    rng = np.random.RandomState(0)
    h = jnp.asarray(rng.normal(size=(3, 13, 16)).astype(np.float32))
    head = jnp.asarray(rng.normal(size=(16, 50)).astype(np.float32))
    targets = jnp.asarray(rng.randint(0, 50, size=(3, 13)))
    logits = jnp.einsum("bte,ev->btv", h, head)
    full_lp = jax.nn.log_softmax(logits)
    ref_lp = jnp.take_along_axis(full_lp, targets[..., None], -1)[..., 0]
    ref_ent = -(jnp.exp(full_lp) * full_lp).sum(-1)
    for chunk in (1, 4, 5, 13, 64):
        lp, ent = logprobs.chunked_logprobs(h, head.T, targets, chunk)
        np.testing.assert_allclose(np.asarray(lp), np.asarray(ref_lp), atol=1e-5)
        np.testing.assert_allclose(np.asarray(ent), np.asarray(ref_ent), atol=1e-5)
    # Gradients through the rematerialised chunks equal the plain ones.
    g1 = jax.grad(lambda h: logprobs.chunked_logprobs(h, head.T, targets, 4)[0].sum())(h)
    g2 = jax.grad(lambda h: jnp.take_along_axis(jax.nn.log_softmax(jnp.einsum("bte,ev->btv", h, head)),
                                                targets[..., None], -1).sum())(h)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), atol=1e-5)
    # Without remat (the chunks' logits kept for the backward pass): the same values and gradients.
    lp, ent = logprobs.chunked_logprobs(h, head.T, targets, 4, remat=False)
    np.testing.assert_allclose(np.asarray(lp), np.asarray(ref_lp), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent), np.asarray(ref_ent), atol=1e-5)
    g3 = jax.grad(lambda h: logprobs.chunked_logprobs(h, head.T, targets, 4, remat=False)[0].sum())(h)
    np.testing.assert_allclose(np.asarray(g3), np.asarray(g2), atol=1e-5)
    # More chunks than are unrolled (13 chunks of 1 against a bound of 2): the lax.map path without remat.
    saved, logprobs._UNROLL = logprobs._UNROLL, 2
    try:
        lp, ent = logprobs.chunked_logprobs(h, head.T, targets, 1, remat=False)
        g4 = jax.grad(lambda h: logprobs.chunked_logprobs(h, head.T, targets, 1, remat=False)[0].sum())(h)
    finally:
        logprobs._UNROLL = saved
    np.testing.assert_allclose(np.asarray(lp), np.asarray(ref_lp), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent), np.asarray(ref_ent), atol=1e-5)
    np.testing.assert_allclose(np.asarray(g4), np.asarray(g2), atol=1e-5)


def test_paper_recipe_runs_on_a_tiny_standin_checkpoint(tmp_path):
    """configs/qwen25_3b.py as a user would run it on a local Qwen2.5 directory (here a tiny random stand-in
    in the same format with the real tokenizer): math stage with math-verify rewards, then the code stage
    from the math model with sandboxed code rewards. Only sizes are overridden."""
    from tests import standin
    paths = standin.build(str(tmp_path))
    cmd = [sys.executable, "-m", "repirl_jax.launch", "--config=configs/qwen25_3b.py", f"--workdir={tmp_path / 'run'}",
           f"--config.model.path={paths['model']}", f"--config.data.train={paths['math']}",
           "--config.stages.enabled=True", f"--config.stages.code_train={paths['code']}",
           "--config.data.prompts_per_iter=4", "--config.policy.minibatch_prompts=2", "--config.prm.minibatch_prompts=4",
           "--config.policy.micro_batch=4", "--config.prm.micro_batch=10", "--config.rollout.max_prompt_len=448",
           "--config.rollout.max_response_len=32", "--config.rollout.prompts_per_call=4",
           "--config.data.experts_per_prompt=1", "--config.train.max_iterations=2", "--config.mesh.devices=1",
           "--config.mesh.fsdp=1", "--config.mesh.tensor=1", "--config.data.filter.enabled=False",
           "--config.model.dtype=float32"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    math_rows = read_metrics(str(tmp_path / "run" / "math"))
    code_rows = read_metrics(str(tmp_path / "run" / "code"))
    assert len(math_rows) == 2 and len(code_rows) == 2
    assert "reward_no_answer" in math_rows[0] and "reward_no_code" in code_rows[0]  # math-verify, then sandbox
    assert math_rows[0]["irl_num_pos"] == 4 and math_rows[0]["irl_num_neg"] + 4 * math_rows[0]["rollout_acc"] * 4 == 16
    assert os.path.exists(tmp_path / "run" / "math" / "final_policy" / "model.safetensors")


def test_frozen_prm_is_not_updated(tmp_path):
    c = tiny_config("repirl", **{"prm.frozen": True, "train.max_iterations": 1})
    before = jax.tree.map(np.asarray, build.build_models(c, build.model_config(c, run_dirs.build_tokenizer(c)),
                                                          None).prm)
    tr = launch.run(c, str(tmp_path), progress_bar=False).trainer
    after = jax.tree.map(np.asarray, tr.state["prm"])
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    assert "prm_grad_norm" not in read_metrics(str(tmp_path))[0]


def test_repirl_with_a_likelihood_prm(tmp_path):
    """prm.head=likelihood: the PRM is a whole Qwen model whose token reward is its own log pi_phi(a_t | s_t).
    At the start it is a copy of the policy, so its rewards are the policy's log-probs; one IRL step moves it."""
    c = tiny_config("repirl", **{"prm.head": "likelihood", "train.max_iterations": 1})
    cfg = build.model_config(c, run_dirs.build_tokenizer(c))
    models = build.build_models(c, cfg, None)
    assert "head" not in models.prm and set(models.prm) == set(models.policy["model"])
    before = jax.tree.map(np.asarray, models.prm)
    tr = launch.run(c, str(tmp_path), progress_bar=False).trainer
    traj = train.Traj(*(np.asarray(x) for x in tr.last_batch.rollouts))
    r = np.asarray(tr.prm_rewards(jax.tree.map(jnp.asarray, before), traj, None))
    lp = np.asarray(tr.logp(build.build_models(c, cfg, None).policy["model"], traj))
    np.testing.assert_allclose(r, lp, atol=1e-5)
    assert (r[np.asarray(traj.response_mask) > 0] <= 0).all()  # log-probs
    after = jax.tree.map(np.asarray, tr.state["prm"])
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    row = read_metrics(str(tmp_path))[0]
    assert row["irl_num_pos"] >= 8 and np.isfinite(row["prm_grad_norm"]) and 0 < row["irl_ess"]
    from repirl_jax.evaluation import reports
    with pytest.raises(ValueError, match="no scalar head"):  # PRM-guided evaluation reads scalar heads only
        reports.make_prm_scorer(str(tmp_path), generator=None)


def test_airl_with_perturbed_negatives_and_experts_in_the_policy_group(tmp_path):
    """The discriminator sees rollouts, demonstrations and one-step-corrupted demonstrations; the policy step
    trains on each prompt's rollouts and demonstrations as one group (2 + 2 rows per prompt)."""
    c = tiny_config("airl_dense", **{"airl.perturbed_negatives": True, "airl.experts_in_group": True,
                                     "prm.micro_batch": 8, "policy.micro_batch": 4})
    summary = launch.run(c, str(tmp_path), progress_bar=False).summary
    rows = read_metrics(str(tmp_path))
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all(np.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
    assert rows[0]["logp_diff_sampler_vs_trainer"] < 1e-4  # demonstrations' logp_old: the current policy's
    assert 0.0 <= summary["prm_auroc_all_steps"] <= 1.0


def test_step_delimiter_must_be_one_token(tmp_path):
    with pytest.raises(train.ConfigError, match="steps.delimiter='=\\?'"):
        launch.run(tiny_config("prl", **{"steps.delimiter": "=?"}), str(tmp_path), progress_bar=False)


def test_training_rollouts_by_continuous_batching(tmp_path):
    """rollout.continuous_rows: an iteration's prompts decode as one queue; its log-probs still equal the
    trainer's, and greedy generations equal the static batches'."""
    from repirl_jax.runtime import distributed
    c = tiny_config("rloo", **{"rollout.continuous_rows": 3, "train.max_iterations": 1})
    tr = launch.run(c, str(tmp_path), progress_bar=False).trainer
    row = read_metrics(str(tmp_path))[0]
    assert row["logp_diff_sampler_vs_trainer"] < 1e-4 and row["response_len"] > 0
    records = tr.batch_records(1)
    prompts = [r["prompt_ids"] for r in records]
    params, scfg = tr.sampler_params(tr.state["policy"]["model"]), tr.sampling_config(2, greedy=True)
    assert tr.generator.rows == 3
    queue = distributed.to_host(tr.generator(params, prompts, scfg, None))
    tr.generator.rows = 0
    static = distributed.to_host(tr.generator(params, prompts, scfg, None))
    np.testing.assert_array_equal(np.asarray(queue.tokens), np.asarray(static.tokens))
    np.testing.assert_array_equal(np.asarray(queue.lengths), np.asarray(static.lengths))
