"""Does every jitted program of a training iteration lower for GPUs and TPUs? Checked without one.

    python tools/export_check.py [--config=configs/qwen25_3b.py] [--platforms=cuda,tpu] [--devices=8]

Builds the trainer of the config (default: the paper's Qwen2.5-3B config) with abstract state at tiny
shapes (the tiny-qwen2 architecture, 16 + 16 token rows, a few prompts: the config's mesh, dtypes,
remat, sampler weights and algorithm stay as they are), then exports with `jax.export` for each platform:
the forward pass (hidden states + LM logits), the sampler, the policy log-probs, the PRM token rewards,
the PRM step and the policy step (and the reference log-probs when the algorithm needs them), sharded over
`--devices` simulated devices. Prints one line per (program, platform) and last `lowered=K/N`.

The cuDNN attention kernel (`model.attn_impl="cudnn"`, what "auto" picks on a GPU for bfloat16) cannot be
lowered without a GPU: JAX checks the cuDNN version of a local GPU while tracing it. It is tried and
reported as `not-checkable` (not counted in N); the programs above use the blocked XLA kernel, which is what
"auto" picks when lowering from this CPU host.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":  # simulated devices must be set before jax is imported
    from bench_common import simulate_devices
    simulate_devices(sys.argv)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(config, devices: int):
    """The config at tiny shapes (architecture tiny-qwen2, short rows, few prompts), its structure kept."""
    c = config.copy_and_resolve_references()
    c.model.update(path="", preset="tiny-qwen2", vocab_size=0, hidden_size=0, num_layers=0, num_heads=0,
                   num_kv_heads=0, head_dim=0, intermediate_size=0, attn_block=8, max_positions=128)
    c.rollout.update(max_prompt_len=16, max_response_len=16)
    c.data.prompts_per_iter = 4
    c.data.experts_per_prompt = min(c.data.experts_per_prompt, 2)
    c.rollout.n = min(c.rollout.n, 2)
    c.rollout.prompts_per_call = 4
    c.policy.minibatch_prompts = c.prm.minibatch_prompts = 4
    c.mesh.devices = devices
    if c.mesh.data == -1:
        c.mesh.data = devices // (c.mesh.fsdp * c.mesh.tensor)
    rows = c.mesh.data * c.mesh.fsdp
    c.policy.micro_batch = c.prm.micro_batch = rows
    c.train.logp_chunk = 8
    return c


def programs(config, devices: int):
    """[(name, jitted fn, abstract args)] of one iteration, plus the trainer (for the cuDNN attempt)."""
    import jax
    import memory_plan
    import numpy as np

    from repirl_jax.models import qwen
    from repirl_jax.runtime.sharding import make_mesh
    from repirl_jax.training import build, train
    train.validate(config, jax.device_count())
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=jax.devices()[:devices])
    cfg = build.model_config(config)
    trainer = train.Trainer(config, mesh, memory_plan.abstract_models(config, cfg), None, None, [], abstract=True)
    out = [(name.split(" ")[0], fn, args) for name, fn, args, _ in memory_plan.programs(trainer, gpu_sampler=False)]
    rows = trainer.chunk_rows(config.data.prompts_per_iter * trainer.n)
    traj = memory_plan._abstract(trainer.put_rows(memory_plan._traj(rows, trainer.P, trainer.R)))
    policy = trainer.state["policy"]["model"]
    out.insert(0, ("policy_logprobs", trainer.logp, (policy, traj)))
    toks = memory_plan._abstract(trainer.put_rows(np.zeros((rows, trainer.P + trainer.R), np.int32)))

    def forward_logits(params, tokens, c=cfg):
        mask = (tokens >= 0).astype(np.int32)
        h, _ = qwen.forward(params, c, tokens, qwen.positions_from_mask(mask), mask, act=trainer.act)
        return qwen.lm_logits(params, c, h, act=trainer.act)

    out.insert(0, ("forward", jax.jit(forward_logits), (policy, toks)))
    cudnn = ("forward[attn_impl=cudnn]", jax.jit(lambda p, t: forward_logits(p, t, cfg.replace(attn_impl="cudnn",
                                                                                              dtype="bfloat16"))),
             (policy, toks))
    return out, cudnn


def check(config, devices: int, platforms=("cuda", "tpu"), log=print) -> tuple[int, int, list]:
    """Export every program for every platform; returns (lowered, total, [(program, platform, error)])."""
    from jax import export

    from repirl_jax.training.update_step import WithFrozen
    progs, cudnn = programs(config, devices)
    ok, failures = 0, []
    for name, fn, args in progs:
        if isinstance(fn, WithFrozen):  # the jitted step itself, its frozen LoRA base (or None) an argument
            fn, args = fn.step, (*args, fn.frozen)
        for platform in platforms:
            try:
                exp = export.export(fn, platforms=[platform])(*args)
                text = exp.mlir_module()
                custom = sorted(set(_custom_calls(text)))
                ok += 1
                log(f"{name} [{platform}]: lowered ({len(text) // 1024} KiB StableHLO, {exp.nr_devices} devices"
                    f"{', custom calls: ' + ','.join(custom) if custom else ''})")
            except Exception as e:  # noqa: BLE001 - report every program, then the count
                failures.append((name, platform, f"{type(e).__name__}: {str(e)[:300]}"))
                log(f"{name} [{platform}]: FAILED {type(e).__name__}: {str(e)[:300]}")
    name, fn, args = cudnn
    if "cuda" in platforms:
        try:
            export.export(fn, platforms=["cuda"])(*args)
            log(f"{name} [cuda]: lowered (a GPU with cuDNN is present)")
        except Exception as e:  # noqa: BLE001
            log(f"{name} [cuda]: not-checkable here ({type(e).__name__}: {str(e)[:120]}); needs a GPU to lower")
    return ok, len(progs) * len(platforms), failures


def _custom_calls(mlir_text: str):
    import re
    return re.findall(r"call_target_name = \"([^\"]+)\"", mlir_text)


def main(argv) -> int:
    from absl import flags
    FLAGS = flags.FLAGS
    config = tiny(FLAGS.config, FLAGS.devices)
    ok, n, _ = check(config, FLAGS.devices, tuple(p for p in FLAGS.platforms.split(",") if p))
    print(f"lowered={ok}/{n}")
    return 0 if ok == n else 1


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "..", "configs", "qwen25_3b.py"),
                                    "Training config file.", lock_config=False)
    flags.DEFINE_integer("devices", 8, "Simulated devices to lower for.")
    flags.DEFINE_string("platforms", "cuda,tpu", "Comma-separated jax.export platforms.")
    app.run(lambda argv: sys.exit(main(argv)))
