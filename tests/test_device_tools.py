"""tools/export_check.py (every program of an iteration lowers for cuda and tpu) and tools/device_check.sh --dry
(the GPU session's prepared script runs end to end at tiny shapes), so neither can rot."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))


def test_every_program_lowers_for_cuda_and_tpu():
    import export_check
    from repirl_jax.config import paper_config
    lines = []
    ok, n, failures = export_check.check(export_check.tiny(paper_config("qwen25_3b"), 8), 8, ("cuda", "tpu"),
                                         log=lines.append)
    assert failures == [] and ok == n >= 10, (ok, n, failures)
    for name in ("forward", "policy_logprobs", "sampler", "prm_token_rewards", "prm_update", "policy_update"):
        for platform in ("cuda", "tpu"):
            assert any(line.startswith(f"{name} [{platform}]: lowered") for line in lines), (name, platform, lines)
    # The cuDNN kernel is tried and reported, not counted.
    assert any(line.startswith("forward[attn_impl=cudnn] [cuda]") for line in lines)


def test_device_check_dry_writes_its_json(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    out = subprocess.run(["bash", os.path.join(REPO, "tools", "device_check.sh"), "--dry"], capture_output=True,
                         text=True, timeout=900, cwd=REPO, env=env)
    assert out.returncode == 0, (out.stdout[-3000:], (tmp_path / "device_check.log").read_text()[-3000:])
    fig = json.loads((tmp_path / "device_check.json").read_text())
    assert fig["errors"] == {} and fig["gpu_tests_exit"] == 0 and fig["figures_exit"] == 0
    model = fig["models"]["qwen2.5-0.5b"]
    assert model["sampler"]["tokens_per_s"] > 0
    assert model["steps"]["policy_step[blocked]"]["seconds"] > 0
    assert model["steps"]["prm_step[blocked]"]["seconds"] > 0
    assert model["attention"]["forward[blocked]"]["seconds"] > 0
    vs = fig["models"]["qwen2.5-0.5b"]["vs_transformers"]
    assert vs["ours_tokens_per_s"] > 0 and vs["hf_tokens_per_s"] > 0 and vs["ratio_vs_hf"] > 0
