"""HF safetensors <-> ours: bit-identical round trips, sharded files, streaming onto a mesh, clear errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from repirl_jax.checkpoints import hf
from repirl_jax.models.config import ConfigError
from repirl_jax.runtime.sharding import make_mesh
from tests import hf_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hf_tensors(path):
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(path, f)))
    return out


def _assert_bit_identical(a_dir, b_dir):
    a, b = _hf_tensors(a_dir), _hf_tensors(b_dir)
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.parametrize("variant", ["qwen2_untied_bias", "qwen2_tied", "qwen3_qknorm", "llama_tied",
                                     "llama31_rope_scaling"])
def test_round_trip_is_bit_identical_and_loads_in_transformers(tmp_path, hf_checkpoints, variant):
    src = hf_checkpoints[variant]
    ours, back = str(tmp_path / "ours"), str(tmp_path / "back")
    hf.hf_to_params_dir(src, ours)
    assert sorted(os.listdir(ours)) == ["config.json", "generation_config.json", "params", "repirl_jax.json"]
    hf.params_dir_to_hf(ours, back)
    _assert_bit_identical(src, back)
    for name in ("config.json", "generation_config.json"):
        assert open(os.path.join(src, name)).read() == open(os.path.join(back, name)).read()
    a = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    b = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
    x = torch.tensor([[5, 7, 11, 13]])
    with torch.no_grad():
        assert torch.equal(a(x).logits, b(x).logits)


def test_sharded_and_bfloat16_checkpoints(tmp_path):
    src = str(tmp_path / "src")
    model = hf_models.build("qwen3_qknorm", src, seed=1, dtype=torch.bfloat16)
    model.save_pretrained(src, max_shard_size="40KB")  # several files + index
    assert os.path.exists(os.path.join(src, "model.safetensors.index.json"))
    params, cfg = hf.load_hf_params(src)
    assert params["embed"].dtype == np.dtype("bfloat16")  # stored dtype kept
    ours, back = str(tmp_path / "ours"), str(tmp_path / "back")
    hf.save_params_dir(params, cfg, ours, carry_from=src)
    hf.params_dir_to_hf(ours, back, max_shard_bytes=30_000)
    files = [f for f in os.listdir(back) if f.endswith(".safetensors")]
    assert len(files) > 1 and os.path.exists(os.path.join(back, "model.safetensors.index.json"))
    index = json.load(open(os.path.join(back, "model.safetensors.index.json")))
    assert set(index["weight_map"].values()) == set(files)
    _assert_bit_identical(src, back)
    transformers.AutoModelForCausalLM.from_pretrained(back)


def test_streaming_load_onto_a_mesh_shards_the_parameters(hf_checkpoints):
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    params, cfg = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"], mesh=mesh)
    q = params["layer_0"]["attn"]["q_kernel"]  # [embed 64, heads 4, head_dim 16]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert {s.data.shape for s in q.addressable_shards} == {(16, 2, 16)}
    lm = params["lm_head"]  # [embed 64, vocab 256]
    assert {s.data.shape for s in lm.addressable_shards} == {(16, 128)}
    ref, _ = hf.load_hf_params(hf_checkpoints["qwen2_untied_bias"])
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_missing_tensor_is_named(tmp_path, hf_checkpoints):
    d = _copy(hf_checkpoints["qwen2_untied_bias"], tmp_path / "m")
    tensors = load_file(os.path.join(d, "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, os.path.join(d, "model.safetensors"))
    with pytest.raises(hf.CheckpointFormatError, match=r"'model.layers.1.mlp.up_proj.weight' is missing"):
        hf.load_hf_params(d)


def test_wrong_shape_is_named_with_file(tmp_path, hf_checkpoints):
    d = _copy(hf_checkpoints["qwen2_untied_bias"], tmp_path / "m")
    tensors = load_file(os.path.join(d, "model.safetensors"))
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    with pytest.raises(hf.CheckpointFormatError,
                       match=r"model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has shape "
                             r"\(16, 64\), expected \(32, 64\)"):
        hf.load_hf_params(d)


def test_corrupt_safetensors_and_unknown_model_type(tmp_path, hf_checkpoints):
    d = _copy(hf_checkpoints["qwen3_qknorm"], tmp_path / "m")
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.write(b"\xff" * 64)  # clobber the header
    with pytest.raises(hf.CheckpointFormatError, match=r"model.safetensors: not a readable safetensors file"):
        hf.load_hf_params(d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["model_type"] = "mistral"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(ConfigError, match=r"model_type='mistral' is not supported"):
        hf.load_hf_params(d)


def test_incompatible_config_for_params_dir(tmp_path, hf_checkpoints):
    ours = str(tmp_path / "ours")
    hf.hf_to_params_dir(hf_checkpoints["qwen2_untied_bias"], ours)
    cfg = json.load(open(os.path.join(ours, "config.json")))
    cfg["intermediate_size"] = 96
    json.dump(cfg, open(os.path.join(ours, "config.json"), "w"))
    with pytest.raises(hf.CheckpointFormatError, match=r"down_kernel.*\(128, 64\) in the checkpoint but "
                                                       r"\(96, 64\) under config.json: incompatible config"):
        hf.load_params_dir(ours)
    with pytest.raises(hf.CheckpointFormatError, match="not a repirl_jax params directory"):
        hf.load_params_dir(hf_checkpoints["qwen2_untied_bias"])


def test_failed_conversion_leaves_no_destination(tmp_path, hf_checkpoints, monkeypatch):
    ours = str(tmp_path / "ours")
    hf.hf_to_params_dir(hf_checkpoints["qwen2_tied"], ours)

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(hf, "save_hf_params", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        hf.params_dir_to_hf(ours, str(tmp_path / "back"))
    assert sorted(os.listdir(tmp_path)) == ["ours"]  # no destination, no temporary left behind
    with pytest.raises(FileExistsError):
        hf.hf_to_params_dir(hf_checkpoints["qwen2_tied"], ours)


def _run(args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XLA_FLAGS": ""})


def test_convert_and_check_logits_tools(tmp_path, hf_checkpoints):
    ours, back = str(tmp_path / "ours"), str(tmp_path / "back")
    src = hf_checkpoints["qwen3_qknorm"]
    r = _run(["tools/convert_hf.py", "--direction=hf_to_orbax", f"--src={src}", f"--dst={ours}"])
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(["tools/convert_hf.py", "--direction=orbax_to_hf", f"--src={ours}", f"--dst={back}"])
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_bit_identical(src, back)
    r = _run(["tools/convert_hf.py", "--direction=orbax_to_hf", f"--src={ours}", f"--dst={back}"])
    assert r.returncode == 1 and "already exists" in r.stderr
    r = _run(["tools/check_logits.py", f"--hf_dir={back}"])
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split())
    assert float(fields["max_abs_diff"]) <= 1e-4 and float(fields["rel_diff"]) <= 5e-5, last
    # An impossible tolerance makes the tool fail: the check can fail.
    r = _run(["tools/check_logits.py", f"--hf_dir={back}", "--tolerance=0"])
    assert r.returncode == 1 and r.stdout.strip().splitlines()[-1].startswith("max_abs_diff=")


def test_params_dir_loads_from_a_relative_path(tmp_path, hf_checkpoints, monkeypatch):
    hf.hf_to_params_dir(hf_checkpoints["qwen2_tied"], str(tmp_path / "ours"))
    monkeypatch.chdir(tmp_path)
    params, cfg = hf.load_params_dir("ours")
    assert params["embed"].shape == (cfg.vocab_size, cfg.hidden_size)
