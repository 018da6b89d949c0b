"""LoRA in training: adapters on one shared frozen base (policy, likelihood PRM, reference), only adapters
trained and checkpointed, resumed exactly after SIGKILL, exported as PEFT adapters and as merged weights."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers

from repirl_jax import launch
from repirl_jax.checkpoints import hf
from repirl_jax.models import lora
from repirl_jax.training import build, train
from repirl_jax.training.metrics import read_metrics
from tests.test_train import REPO, _without_timing, kill_and_relaunch
from tests.train_config import tiny_config

LORA = {"policy.lora.rank": 4, "prm.lora.rank": 2, "prm.head": "likelihood"}


def _trainer(config, models):
    from repirl_jax.data import synthetic
    from repirl_jax.rewards.scorers import build_reward_fn
    from repirl_jax.runtime.sharding import make_mesh
    tok = synthetic.CharTokenizer()
    train_set = build.build_datasets(config, tok)[0]
    return train.Trainer(config, make_mesh(1, 1, 1, devices=jax.devices()[:1]), models, tok,
                         build_reward_fn(config)[0], train_set)


def _models(config):
    from repirl_jax.data import synthetic
    from repirl_jax.runtime.sharding import make_mesh
    cfg = build.model_config(config, synthetic.CharTokenizer())
    return build.build_models(config, cfg, make_mesh(1, 1, 1, devices=jax.devices()[:1]))


def test_adapters_train_on_one_frozen_base_that_policy_prm_and_reference_share():
    c = tiny_config("repirl", **LORA, **{"policy.kl_coef": 0.1})  # kl_coef: the method needs the reference
    models = _models(c)
    assert models.prm_base is models.base and models.ref is models.base
    tr = _trainer(c, models)
    base = tr.frozen["policy"]["model"]
    assert tr.frozen["prm"] is base and tr.ref is base  # one copy on the device
    before = jax.tree.map(np.asarray, base)
    for it in (1, 2):
        tr.iteration(it)
    assert not lora.split(tr.state["policy"]["model"])[0] and not lora.split(tr.state["prm"])[0]  # adapters only
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(tr.frozen["policy"]["model"])):
        np.testing.assert_array_equal(a, np.asarray(b))  # the base did not move
    moved = [float(np.abs(np.asarray(x)).max()) for k, x in _leaves(tr.state["policy"]["model"]) if "lora_b" in k]
    assert max(moved) > 0  # B left zero: the adapter learned
    opt = jax.tree.leaves(tr.state["policy_opt"])
    assert sum(x.size for x in opt) <= 2 * tr.cfg.num_lora_params() + 16  # Adam's two moments of the adapter


def _leaves(tree):
    return [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_shared_base_iteration_equals_two_separate_copies():
    """The shared-base rePIRL iteration gives the same adapters as one whose PRM has its own copy of the base."""
    c = tiny_config("repirl", **LORA)
    shared = _trainer(c, _models(c))
    models = _models(c)
    models.prm_base = jax.tree.map(lambda x: x.copy(), models.prm_base)
    separate = _trainer(c, models)
    assert separate.frozen["prm"] is not separate.frozen["policy"]["model"]
    for it in (1, 2):
        m1, m2 = shared.iteration(it), separate.iteration(it)
        assert _without_timing([m1]) == _without_timing([m2])
    for a, b in zip(jax.tree.leaves(shared.state), jax.tree.leaves(separate.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_lora_run_killed_and_relaunched_ends_identical(tmp_path):
    over = ["--config.train.async_checkpoint=True", *[f"--config.{k}={v}" for k, v in LORA.items()]]
    again, rows, ref = kill_and_relaunch(tmp_path, over, 5, 3)
    assert "resumed from" in again.stderr
    assert _without_timing(rows) == _without_timing(ref)
    bases = json.load(open(tmp_path / "ref" / "lora_bases.json"))
    assert bases["prm"] == bases["policy"] and bases["policy"]["path"] == str(tmp_path / "ref" / "base")
    a, _, _, _ = hf.load_training_adapter(str(tmp_path / "run"))
    b, _, _, _ = hf.load_training_adapter(str(tmp_path / "ref"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_changed_base_is_refused_on_resume(tmp_path):
    c = tiny_config("rloo", **{"policy.lora.rank": 2, "train.max_iterations": 1})
    launch.run(c, str(tmp_path), progress_bar=False)
    bases = json.load(open(tmp_path / "lora_bases.json"))
    bases["policy"]["fingerprint"] = "0" * 64
    json.dump(bases, open(tmp_path / "lora_bases.json", "w"))
    with pytest.raises(ValueError, match="LoRA base .* changed since this run started"):
        launch.run(tiny_config("rloo", **{"policy.lora.rank": 2, "train.max_iterations": 2}), str(tmp_path),
                   progress_bar=False)


def test_lora_run_exports_a_peft_adapter_and_merged_weights(tmp_path, hf_checkpoints):
    """From an HF base: the PEFT export loads onto transformers' model of the base with our policy's logits;
    the merged export (checkpoint_to_hf) gives the same logits without PEFT."""
    peft = pytest.importorskip("peft")
    base_dir = hf_checkpoints["qwen2_untied_bias"]
    c = tiny_config("rloo", **{"policy.lora.rank": 4, "policy.lora.targets": ("q", "v", "o", "gate", "down"),
                               "train.max_iterations": 1, "policy.lr": 5e-2, "model.path": base_dir})
    result = launch.run(c, str(tmp_path / "run"), progress_bar=False)
    assert result.summary["lora_bases"]["policy"]["path"] == base_dir
    ours = result.trainer
    env = {**os.environ, "XLA_FLAGS": ""}
    for direction in ("checkpoint_to_peft", "checkpoint_to_hf"):
        r = subprocess.run([sys.executable, "-m", "repirl_jax.convert", f"--direction={direction}",
                            f"--src={tmp_path / 'run'}", f"--dst={tmp_path / direction}"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(tmp_path / "checkpoint_to_peft" / "adapter_config.json"))["r"] == 4
    tokens = np.asarray([[5, 17, 33, 2, 9, 100, 41, 7]])
    with torch.no_grad():
        base_model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        plain = base_model(torch.tensor(tokens)).logits.numpy()
        with_peft = peft.PeftModel.from_pretrained(base_model, str(tmp_path / "checkpoint_to_peft")).eval()
        theirs = with_peft(torch.tensor(tokens)).logits.numpy()
        merged = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoint_to_hf"),
                                                                   dtype=torch.float32)(torch.tensor(tokens)).logits.numpy()
    from repirl_jax.models import qwen
    mask = np.ones_like(tokens)
    h, _ = qwen.forward(ours.model_params(), ours.cfg, tokens, qwen.positions_from_mask(mask), mask)
    mine = np.asarray(qwen.lm_logits(ours.model_params(), ours.cfg, h))
    assert np.abs(theirs - plain).max() > 1e-3  # the adapter moved the model: the comparison means something
    assert np.abs(mine - theirs).max() <= 1e-4 and np.abs(merged - theirs).max() <= 1e-4


def test_memory_plan_holds_one_base_and_small_adapter_states():
    """tools/memory_plan.py with LoRA policy and likelihood PRM: every program compiles, and the resident
    state is one base plus adapters and their Adam moments, against two full models with moments without. In
    bfloat16, as the paper's configs: the sampler's float32 twin (the GPU estimate) reads the merged weights."""
    from tools import memory_plan
    bf16 = {"model.dtype": "bfloat16"}
    full = memory_plan.plan(tiny_config("repirl", **{"prm.head": "likelihood"}, **bf16), 8, (1, 4, 2),
                            log=lambda *_: None)
    with_lora = memory_plan.plan(tiny_config("repirl", **LORA, **bf16), 8, (1, 4, 2), log=lambda *_: None)
    assert set(with_lora["programs"]) == set(full["programs"]) and "temp_f32" in with_lora["programs"]["sampler"]
    assert with_lora["resident_bytes"] < full["resident_bytes"] / 2  # (rank 4 on hidden 32: adapters are large here)
    for p in with_lora["programs"].values():
        assert p["temp"] >= 0 and p["peak"] >= with_lora["resident_bytes"]


@pytest.mark.parametrize("over", [{"prm.lora.rank": 2}, {"policy.lora.rank": 2}, {"policy.lora.rank": 2, "algo": "prime"}])
def test_one_model_with_lora_beside_one_without(tmp_path, over):
    """LoRA on the PRM only (its frozen base a copy of the policy's starting weights, which the policy trains), on
    the policy only (the PRM trains its own copy of the base), and PRIME (its reference is the policy's base)."""
    over = dict(over)
    algo = over.pop("algo", "repirl")
    tr = launch.run(tiny_config(algo, **over), str(tmp_path), progress_bar=False).trainer
    assert [r["iteration"] for r in read_metrics(str(tmp_path))] == [1, 2]
    assert (tr.frozen["prm"] is not None) == ("prm.lora.rank" in over)
    assert (tr.frozen["policy"] is not None) == ("policy.lora.rank" in over)
    if tr.frozen["prm"] is not None:  # not the policy's (trained, donated) arrays
        assert all(a is not b for a, b in zip(jax.tree.leaves(tr.frozen["prm"]), jax.tree.leaves(tr.state["policy"])))
    if algo == "prime":
        assert tr.ref is tr.frozen["policy"]["model"]
