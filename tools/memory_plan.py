"""Per-device memory of a training config, from ahead-of-time compiles on simulated devices.

    python tools/memory_plan.py --config=configs/qwen25_3b.py --devices=8 [--mesh=data,fsdp,tensor]
    python tools/memory_plan.py --config=configs/qwen3_4b.py --devices=8 --search   # which mesh/micro fit

The trainer is built with abstract state (ShapeDtypeStructs with shardings: no weights allocated), then
the programs of one iteration are lowered and compiled for the config's real shapes: the sampler (one
call of rollout.prompts_per_call prompts x n samples, with its weight copy per rollout.weights as an input), the PRM's token-reward forward, the PRM update and
the policy update (one mini-batch of micro-batches each), and the reference log-probs when a loss needs
them. For each it prints XLA's per-device argument, output, alias and temporary bytes and the
collectives in the compiled program.

A program's peak = the run's resident state (every parameter and optimiser tree, whether or not the
program reads it) + its inputs that are not state + its outputs that do not alias an input + its
temporaries. The last line is `peak_bytes_per_device=<max over programs>`.

Compiled by the CPU backend (the only one here): its buffer assignment is not the GPU's, and it keeps
bfloat16 weights and the KV cache in float32 inside the sampler's decode loop (Qwen2.5-3B, 64 rows per
device: 23.0 GiB of temporaries in bf16 against 21.9 GiB for the same program in float32). So with a
bfloat16 model the sampler is also compiled in float32 (`sampler@float32`, nothing to upcast) and reported
as a GPU holds it: the bf16 program's arguments and outputs, and temporaries = float32 temporaries - the
bf16 KV cache per device (the f32 program holds the cache at twice its bf16 size; every other buffer of the
bf16 program is no larger than its f32 counterpart: an upper bound, see `gpu_sampler_temp`). That figure
enters the peak; the CPU's own bf16 figure is printed too. Read every figure as an estimate of the same
program on a GPU, not a measurement of one.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":  # simulated devices must be set before jax is imported
    from bench_common import simulate_devices
    simulate_devices(sys.argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

GiB = 1024 ** 3


def fmt(b: int) -> str:
    return f"{b / GiB:.2f} GiB" if b >= GiB / 10 else f"{b / 1024 ** 2:.2f} MiB"
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs/arrays with shardings (max over devices)."""
    import jax
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total


def collectives(hlo_text: str) -> dict[str, int]:
    """How many of each collective op the compiled (partitioned) HLO contains."""
    out = {}
    for name in COLLECTIVES:
        n = len(re.findall(rf"= [^=\n]*\b{name}(-start)?\(", hlo_text))
        if n:
            out[name] = n
    return out


def abstract_models(config, cfg):
    """The run's models as ShapeDtypeStructs, as build.build_models makes them (LoRA adapters on one base)."""
    from repirl_jax.models import heads, lora, prm_heads, qwen
    from repirl_jax.training import build, train
    params = qwen.abstract_params(cfg)
    pcfg, prm_cfg = build.lora_config(cfg, config.policy.lora), build.lora_config(cfg, config.prm.lora)
    base = params if pcfg.lora_rank else None
    policy = {"model": lora.abstract_adapter(pcfg) if base is not None else params}
    if config.advantage.estimator == "ppo":
        policy["value"] = heads.abstract_scalar_head(cfg)
    prm = prm_base = None
    if train.needs_prm(config):
        trunk = params
        if prm_cfg.lora_rank:
            prm_base, trunk = params, lora.abstract_adapter(prm_cfg)
        prm = prm_heads.get(config).tree(trunk, heads.abstract_scalar_head(cfg))
    ref = (base if base is not None else params) if train.needs_ref(config) else None
    return train.Models(pcfg, policy, prm, ref, prm_cfg=prm_cfg if prm_cfg != pcfg else None, base=base,
                        prm_base=prm_base)


def _abstract(tree):
    import jax
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _traj(rows, P, R):
    from repirl_jax.training.train import Traj
    return Traj(np.zeros((rows, P), np.int32), np.ones((rows, P), np.int32), np.zeros((rows, R), np.int32),
                np.ones((rows, R), np.float32))


def sampler_float32(trainer, scfg, weights, toks, mask):
    """The sampler compiled with float32 compute (weights and KV cache in float32): (jitted fn, abstract args).

    Why: the CPU backend keeps bfloat16 weights and the KV cache in float32 inside the decode loop (it
    upcasts bf16 for its arithmetic), so the bf16 program's CPU temporaries are not what a GPU holds. A
    float32 program has nothing to upcast; each of its buffers is the bf16 program's buffer at its widest.
    `gpu_sampler_temp` then scales the parts that a GPU keeps in bfloat16."""
    import jax
    import jax.numpy as jnp

    from repirl_jax.generation import sampling
    cfg32 = trainer.base_cfg.replace(dtype="float32")  # a LoRA policy samples its merged weights: the base config
    w32 = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32 if x.dtype == jnp.bfloat16 else x.dtype,
                                                      sharding=x.sharding), weights)
    gen = jax.jit(lambda params, t, m, key: sampling.generate(params, cfg32, t, m, scfg, key, act=trainer.sample_act))
    return gen, (w32, _abstract(toks), _abstract(mask), jax.eval_shape(lambda: jax.random.key(0)))


def kv_cache_bytes_per_device(trainer, rows: int, length: int) -> int:
    """Bytes of the sampler's KV cache (compute dtype) on one device, sharded as the sampler shards it."""
    import jax

    from repirl_jax.models import qwen
    from repirl_jax.runtime.sharding import tree_shardings
    cache = jax.eval_shape(lambda: qwen.init_cache(trainer.cfg, rows, length))
    act = trainer.sample_act
    axes = qwen.KVCache(k=tuple(qwen.CACHE_AXES for _ in cache.k), v=tuple(qwen.V_CACHE_AXES for _ in cache.v),
                        valid=("batch", None), index=("batch",))
    sh = tree_shardings(axes, cache, act.mesh, act.rules)
    return shard_bytes(jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), cache, sh))


def gpu_sampler_temp(temp_f32: int, cache_bytes: int) -> int:
    """Sampler temporaries as a GPU holds them, from the float32 compile (`sampler_float32`).

    temp_f32 counts the KV cache (at least one copy, the loop carry) at 4 bytes per element; the bf16
    program holds the same cache at 2, so it needs at most temp_f32 - cache_bytes (cache_bytes = the
    bf16 cache per device). Every other buffer of the bf16 program is no larger than its float32
    counterpart (activations halve, logits and sampling stay float32), so this is an upper bound given
    the same buffer assignment; it does not halve the activations (conservative)."""
    return temp_f32 - cache_bytes


def programs(trainer, gpu_sampler: bool = True):
    """[(name, jitted fn, abstract args, names of the state trees it takes)] for one iteration."""
    import jax
    import jax.numpy as jnp

    from repirl_jax.generation import sampling
    from repirl_jax.models import lora
    from repirl_jax.training import train
    c, n, k, P, R = trainer.config, trainer.n, trainer.num_experts, trainer.P, trainer.R
    bases = lambda *names: tuple(f"{p}lora_base" for p, name in (("", "policy"), ("prm_", "prm"))  # noqa: E731
                                 if name in names and trainer.frozen[name] is not None)
    state = trainer.state
    out = []

    # Sampler: one call of prompts_per_call prompts, n samples each, greedy=False as in rollouts.
    rows = c.rollout.prompts_per_call
    toks, mask = trainer.put_rows((np.zeros((rows, P), np.int32), np.ones((rows, P), np.int32)),
                                   rules=trainer.sample_act.rules)
    scfg = sampling.SamplingConfig(max_new_tokens=R, temperature=c.rollout.temperature, top_p=c.rollout.top_p,
                                   num_samples=n, stop_token_ids=(0,), pad_token_id=0,
                                   decode_impl="model")  # what a GPU or TPU runs ("auto" on this CPU: weight-major)
    gen = jax.jit(lambda params, t, m, key: sampling.generate(params, trainer.base_cfg, t, m, scfg, key,
                                                              act=trainer.sample_act))
    weights, weight_state = state["policy"]["model"], ("policy.model",)
    if c.rollout.weights != "train" or lora.has_adapter(trainer.model_params()):
        # the sampler's own copy (rollout.weights; a LoRA policy's adapter merged in): an input of the sampler
        from repirl_jax.models import qwen
        merged = jax.eval_shape(lambda p: qwen.inference_params(lora.merge(p, trainer.cfg), trainer.base_cfg),
                                trainer.model_params())
        shardings = trainer.sampler_shardings or qwen.param_shardings(trainer.base_cfg, trainer.mesh)
        weights = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), merged, shardings)
        weight_state = ()
    out.append(("sampler", gen, (weights, _abstract(toks), _abstract(mask),
                                 jax.eval_shape(lambda: jax.random.key(0))), weight_state))
    if gpu_sampler and jnp.dtype(trainer.cfg.dtype) != jnp.float32:
        out.append(("sampler@float32", *sampler_float32(trainer, scfg, weights, toks, mask), weight_state))

    # Row-chunked forwards (as Trainer._chunks): PRM token rewards, reference log-probs.
    rows_iter = c.data.prompts_per_iter * n
    chunk = trainer.chunk_rows(rows_iter)
    chunk_traj = _abstract(trainer.put_rows(_traj(chunk, P, R)))
    if train.needs_prm(c):
        ref_lp = _abstract(trainer.put_rows(np.zeros((chunk, R), np.float32))) if trainer.prm_head.needs_ref_logp \
            else None
        out.append(("prm_token_rewards", trainer.prm_rewards, (trainer.full("prm"), chunk_traj, ref_lp),
                    ("prm", *bases("prm"))))
    if train.needs_ref(c):
        out.append(("reference_logprobs", trainer.logp, (trainer.ref, chunk_traj), ("ref",)))

    # PRM update: one mini-batch of PRM micro-batches (rollouts + demonstrations per prompt for rePIRL).
    if train.needs_prm(c):
        mb_rows = c.prm.minibatch_prompts * trainer.algo.prm_rows_per_prompt(c)
        n_micro = mb_rows // c.prm.micro_batch
        traj = _traj(mb_rows, P, R)
        if trainer.prm_head.needs_ref_logp:
            extra = {"ref_logp": np.zeros((mb_rows, R), np.float32), "outcome": np.zeros(mb_rows, np.float32),
                     "keep": np.ones(mb_rows, np.float32), "num_tokens": np.ones(mb_rows, np.float32)}
            fn = trainer.prm_updates["main"]
        elif n_micro == 1:
            extra = {"logp_old": np.zeros((mb_rows, R), np.float32), "pos": np.zeros(mb_rows, np.float32),
                     "neg": np.zeros(mb_rows, np.float32), "group": np.zeros(mb_rows, np.int32)}
            fn = trainer.prm_updates["single_pass"]
        else:
            extra = {"coef": np.zeros(mb_rows, np.float32)}
            fn = trainer.prm_updates["main"]
        stacked = _abstract(trainer.put_micro((traj, extra), n_micro))
        out.append((f"prm_update ({n_micro} micro-batches of {c.prm.micro_batch})", fn, (state, stacked),
                    tuple(state) + bases("prm")))

    # Policy update: one mini-batch of policy micro-batches.
    per_prompt = {"bc": max(k, 1), "kto": n + k}.get(c.algo, n)
    mb_rows = c.policy.minibatch_prompts * per_prompt
    n_micro = mb_rows // c.policy.micro_batch
    z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    extra = {"num_tokens": np.ones(mb_rows, np.float32), "row_scale": np.ones(mb_rows, np.float32)}
    if c.algo == "kto":
        extra.update(ref_logp=z(mb_rows, R), desirable=z(mb_rows), undesirable=z(mb_rows))
    elif c.algo != "bc":
        extra.update(logp_old=z(mb_rows, R), adv=z(mb_rows, R))
        if c.policy.kl_coef > 0:
            extra["ref_logp"] = z(mb_rows, R)
        if c.advantage.estimator == "ppo":
            extra.update(old_values=z(mb_rows, R), returns=z(mb_rows, R))
    stacked = _abstract(trainer.put_micro((_traj(mb_rows, P, R), extra), n_micro))
    out.append((f"policy_update ({n_micro} micro-batches of {c.policy.micro_batch})", trainer.policy_update,
                (state, stacked), tuple(state) + bases("policy")))
    return out


def _resident(trainer) -> dict:
    """The trees a run holds on the devices throughout: state, reference and LoRA bases, each array once."""
    trees = {**trainer.state, "ref": trainer.ref, "lora_base": trainer.frozen["policy"],
             "prm_lora_base": trainer.frozen["prm"]}
    seen, out = set(), {}
    for name, tree in trees.items():
        leaves = [x for x in jax_leaves(tree) if id(x) not in seen]
        seen.update(id(x) for x in leaves)
        if leaves:
            out[name] = shard_bytes(leaves)
    return out


def jax_leaves(tree):
    import jax
    return jax.tree.leaves(tree) if tree is not None else []


def _state_bytes(trainer, names) -> int:
    total = 0
    for name in names:
        node = {"ref": trainer.ref, "lora_base": trainer.frozen["policy"], "prm_lora_base": trainer.frozen["prm"],
                **trainer.state}
        for part in name.split("."):
            node = node[part]
        total += shard_bytes(node)
    return total


def plan(config, devices: int, mesh_shape=None, log=functools.partial(print, flush=True), only=(),
         gpu_sampler: bool = True) -> dict:
    """Compile every program of one iteration for `devices` simulated devices; returns the figures."""
    import jax

    from repirl_jax.runtime.sharding import make_mesh
    from repirl_jax.training import build, train
    if mesh_shape:
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
    config.mesh.devices = devices
    train.validate(config, jax.device_count())
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=jax.devices()[:devices])
    cfg = build.model_config(config)  # no tokenizer: the preset's vocabulary (Qwen: 151,936)
    trainer = train.Trainer(config, mesh, abstract_models(config, cfg), None, None, [], abstract=True)
    resident = _resident(trainer)
    resident_total = sum(resident.values())
    log(f"model {cfg.model_type} hidden={cfg.hidden_size} layers={cfg.num_hidden_layers} vocab={cfg.vocab_size}: "
        f"{cfg.num_params() / 1e9:.3f}B parameters ({cfg.param_dtype} stored, {cfg.dtype} compute, remat={cfg.remat})"
        + "".join(f"; {n} LoRA rank {x.lora_rank} on {','.join(x.lora_targets)}: {x.num_lora_params() / 1e6:.1f}M"
                  for n, x in (("policy", trainer.cfg), ("PRM", trainer.prm_cfg)) if x.lora_rank))
    log(f"mesh data={mesh.shape['data']} fsdp={mesh.shape['fsdp']} tensor={mesh.shape['tensor']} on {devices} devices; "
        f"prompt {trainer.P} + response {trainer.R} tokens; n={trainer.n}")
    log("resident state per device: " + ", ".join(f"{k} {fmt(v)}" for k, v in resident.items()) +
        f" = {fmt(resident_total)}")
    figures = {"params": cfg.num_params(), "resident_bytes": resident_total, "programs": {}}
    for name, fn, args, state_names in programs(trainer, gpu_sampler):
        if only and not any(name.startswith(o) for o in only):
            continue
        t = time.time()
        compiled = fn.lower(*args).compile()
        ma = compiled.memory_analysis()
        arg, outb, alias, temp = (int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes),
                                  int(ma.alias_size_in_bytes), int(ma.temp_size_in_bytes))
        state_in = _state_bytes(trainer, state_names)
        peak = resident_total + (arg - state_in) + (outb - alias) + temp
        coll = collectives(compiled.as_text())
        figures["programs"][name] = dict(argument=arg, output=outb, alias=alias, temp=temp, peak=peak, collectives=coll)
        log(f"{name}: argument {fmt(arg)}, output {fmt(outb)} (aliased {fmt(alias)}), temp {fmt(temp)} "
            f"-> peak {fmt(peak)}  [compiled in {time.time() - t:.0f} s]")
        log("    collectives: " + (", ".join(f"{k} x{v}" for k, v in coll.items()) or "none"))
    progs = figures["programs"]
    if "sampler" in progs and "sampler@float32" in progs:
        # As a GPU would hold it: the bf16 program's arguments/outputs, temporaries from the f32 compile.
        rows = config.rollout.prompts_per_call * trainer.n
        cache = kv_cache_bytes_per_device(trainer, rows, trainer.P + trainer.R)
        s16, s32 = progs["sampler"], progs.pop("sampler@float32")
        temp = gpu_sampler_temp(s32["temp"], cache)
        peak = s16["peak"] - s16["temp"] + temp
        figures["sampler_cpu"] = s16
        progs["sampler"] = dict(s16, temp=temp, peak=peak, temp_cpu_bf16=s16["temp"], temp_f32=s32["temp"],
                                kv_cache=cache)
        log(f"sampler as a GPU holds it: temp {fmt(s32['temp'])} (float32 compile) - KV cache {fmt(cache)} "
            f"(bf16, {rows} rows) = {fmt(temp)} (CPU bf16 compile: {fmt(s16['temp'])}) -> peak {fmt(peak)}")
    figures["peak"] = max(p["peak"] for p in progs.values())
    return figures


def _candidates(devices: int):
    for tensor in (1, 2, 4, 8):
        for fsdp in (devices // tensor, 1):
            if devices % tensor == 0 and fsdp >= 1 and devices % (tensor * fsdp) == 0:
                yield (devices // (tensor * fsdp), fsdp, tensor)


def main(argv) -> int:
    from absl import flags
    FLAGS = flags.FLAGS
    config = FLAGS.config
    mesh_shape = tuple(int(x) for x in FLAGS.mesh.split(",")) if FLAGS.mesh else None
    if mesh_shape and len(mesh_shape) != 3:
        print(f"--mesh={FLAGS.mesh}: expected data,fsdp,tensor", file=sys.stderr)
        return 2
    budget = FLAGS.budget_gib * GiB
    if FLAGS.search:
        fits = []
        for shape in sorted(set(_candidates(FLAGS.devices))):
            for rows_per_device in (1, 2, 4):  # a micro-batch's rows are split over data x fsdp
                c = config.copy_and_resolve_references()
                c.policy.micro_batch = c.prm.micro_batch = rows_per_device * shape[0] * shape[1]
                try:
                    f = plan(c, FLAGS.devices, shape, log=lambda *_: None)
                except Exception as e:  # noqa: BLE001 - a candidate that does not validate or compile
                    print(f"mesh {shape} micro_batch {c.policy.micro_batch}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                ok = f["peak"] <= budget
                print(f"mesh {shape} micro_batch {c.policy.micro_batch}: peak {f['peak'] / GiB:.2f} GiB "
                      f"{'fits' if ok else 'does not fit'} {FLAGS.budget_gib} GiB", flush=True)
                if ok:
                    fits.append((shape, c.policy.micro_batch, f["peak"]))
        if fits:
            shape, micro, peak = max(fits, key=lambda x: (x[1], -x[2]))
            print(f"largest micro-batch that fits: --config.mesh.data={shape[0]} --config.mesh.fsdp={shape[1]} "
                  f"--config.mesh.tensor={shape[2]} --config.policy.micro_batch={micro} --config.prm.micro_batch={micro}")
        print(f"peak_bytes_per_device={min((p for *_, p in fits), default=-1)}")
        return 0 if fits else 1
    f = plan(config, FLAGS.devices, mesh_shape, only=tuple(p for p in FLAGS.programs.split(",") if p))
    verdict = "fits" if f["peak"] <= budget else "DOES NOT FIT"
    print(f"peak per device {f['peak'] / GiB:.2f} GiB: {verdict} a budget of {FLAGS.budget_gib} GiB")
    print(f"peak_bytes_per_device={f['peak']}")
    return 0


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=False)
    flags.DEFINE_integer("devices", 8, "Simulated devices to compile for.")
    flags.DEFINE_string("mesh", "", "data,fsdp,tensor (default: the config's mesh).")
    flags.DEFINE_float("budget_gib", 44.0, "Per-device budget the plan is checked against.")
    flags.DEFINE_string("programs", "", "Comma-separated name prefixes of the programs to compile (default all).")
    flags.DEFINE_bool("search", False, "Try meshes and micro-batch sizes; print which fit the budget.")
    flags.mark_flag_as_required("config")
    app.run(lambda argv: sys.exit(main(argv)))
