"""What a training config names, built: the tokenizer's prompts, the datasets, the model config and the models.

    build_datasets(config, tokenizer)          -> (train records, validation records, test records or None)
    model_config(config, tokenizer=None)       -> the run's QwenConfig (a run directory, a checkpoint, a preset)
    build_models(config, cfg, mesh, policy)    -> train.Models: policy, PRM, reference (LoRA adapters on bases)
    record_lora_bases(config, workdir, models) -> WORKDIR/lora_bases.json (where each LoRA base lives)

`launch` builds a run from these and hands the models to `training.loop`; tools and tests build parts alone.
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax

from repirl_jax import algorithms
from repirl_jax.checkpoints import hf
from repirl_jax.checkpoints.run_dirs import is_run_dir as _is_run_dir
from repirl_jax.data import synthetic
from repirl_jax.data.prompts import format_prompt as format_prompt_text
from repirl_jax.data.prompts import load_prompt_set
from repirl_jax.models import heads, lora, prm_heads, qwen
from repirl_jax.models.config import QwenConfig, preset
from repirl_jax.training import train

log = logging.getLogger("repirl_jax")


def format_prompt(config, tokenizer, problem: str) -> str:
    """`data.prompts.format_prompt` with the config's data.prompt_format (and synthetic task settings)."""
    s = config.data.synthetic
    return format_prompt_text(problem, config.data.prompt_format, tokenizer, modulus=s.modulus, ops=s.ops)


def build_datasets(config, tokenizer):
    """(train records, validation records, test records or None)."""
    if config.data.train in ("synthetic", "synthetic:test"):
        s = config.data.synthetic
        splits = synthetic.make_splits(seed=config.seed, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test,
                                       noise=s.noise, noise_kind=s.get("noise_kind", "carried"),
                                       num_steps=tuple(s.num_steps), ops=s.ops,
                                       max_addend=s.max_addend, max_factor=s.max_factor, modulus=s.modulus,
                                       num_experts=max(config.data.experts_per_prompt, 1))
        if config.data.prompt_format != "raw":  # the task through a chat model's template
            for rec in (r for split in splits.values() for r in split):
                rec["prompt"] = format_prompt(config, tokenizer, rec["prompt"])
        if config.data.train == "synthetic:test":  # test-time training: the test prompts are the training set
            return splits["test"], splits["val"], splits["test"]
        return splits["train"], splits["val"], splits["test"]
    d = config.data
    train, report = load_prompt_set(d.train, d.prompt_field, d.answer_field, d.experts_field or None,
                                    domain=d.domain, on_bad_row=d.on_bad_row,
                                    require_experts=algorithms.get(config.algo).experts_in_data)
    if report.skipped:
        log.warning("%s: skipped %s of %d rows, e.g. %s", d.train, report.skipped, report.rows, report.first_errors[:2])
    val = []
    if d.val:
        val, _ = load_prompt_set(d.val, d.prompt_field, d.answer_field, None, domain=d.domain,
                                 on_bad_row=d.on_bad_row, require_experts=False, limit=d.val_limit)
    for rec in train + val:
        rec["prompt"] = format_prompt(config, tokenizer, rec["prompt"])
    return train, val, None


def model_config(config, tokenizer=None):
    """The run's QwenConfig: a training run's model_config.json, a checkpoint's config.json, or the preset
    (vocabulary: model.vocab_size, else the tokenizer's rounded up to a multiple of 8, else the preset's)."""
    m = config.model
    if m.path and os.path.exists(os.path.join(m.path, "model_config.json")):  # a training run directory
        with open(os.path.join(m.path, "model_config.json")) as f:
            cfg = QwenConfig.from_hf_dict(json.load(f), source=os.path.join(m.path, "model_config.json"))
    elif m.path:
        cfg = QwenConfig.from_hf_dir(m.path)
    else:
        over = {k: v for k, v in dict(hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                                      num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
                                      head_dim=m.head_dim, intermediate_size=m.intermediate_size).items() if v}
        vocab = m.vocab_size or (8 * math.ceil(len(tokenizer) / 8) if tokenizer is not None else 0)
        cfg = preset(m.preset, **over, **({"vocab_size": vocab} if vocab else {}))
    if tokenizer is not None and cfg.vocab_size < len(tokenizer):
        raise ValueError(f"the model's vocab_size={cfg.vocab_size} is smaller than the tokenizer's {len(tokenizer)}")
    return cfg.replace(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attn_block=m.get("attn_block", 128),
                       attn_impl=m.get("attn_impl", "auto"))


def policy_param_count(config) -> int:
    """The policy's parameter count from the config alone (no JAX call); 0 where it cannot be read (the run
    itself then says why)."""
    try:
        return model_config(config).num_params()
    except Exception:  # noqa: BLE001
        return 0


def lora_config(cfg, settings):
    """`cfg` with a model's LoRA settings (policy.lora / prm.lora; rank 0: none)."""
    if not settings.rank:
        return cfg
    return cfg.replace(lora_rank=settings.rank, lora_alpha=settings.alpha, lora_targets=tuple(settings.targets))


def build_models(config, cfg, mesh, policy_params=None):
    """The run's models from `cfg` (the base architecture): policy, PRM, reference. A model with LoRA
    (policy.lora.rank / prm.lora.rank > 0) trains an adapter on a frozen base; the policy's base is shared by
    the PRM (when it starts from the policy) and is the reference model."""

    seed = jax.random.key(config.seed)
    if policy_params is None:
        if config.model.path and _is_run_dir(config.model.path):  # a training run: its latest policy
            policy_params = jax.device_put(hf.load_training_checkpoint(config.model.path)[0])
        elif config.model.path:  # master weights in model.param_dtype (a bf16 checkpoint would lose small updates)
            policy_params, _ = hf.load_any(config.model.path, mesh=mesh, dtype=config.model.param_dtype)
        else:
            policy_params = qwen.init_params(cfg, jax.random.fold_in(seed, 1))
    pcfg = lora_config(cfg, config.policy.lora)
    base = policy_params if pcfg.lora_rank else None
    policy = {"model": lora.init_adapter(pcfg, jax.random.fold_in(seed, 4)) if base is not None else policy_params}
    if algorithms.get(config.algo).needs_value_head(config):
        policy["value"] = heads.init_scalar_head(cfg, jax.random.fold_in(seed, 2))
    prm, prm_cfg, prm_base = None, lora_config(cfg, config.prm.lora), None
    if train.needs_prm(config):
        head = heads.init_scalar_head(cfg, jax.random.fold_in(seed, 3))
        if config.prm.path and _is_run_dir(config.prm.path):  # a training run's learned PRM, head included
            trunk, _, saved_head, _ = hf.load_training_checkpoint(config.prm.path, which="prm")
            trunk = jax.device_put(trunk)
            if saved_head is not None:
                head = {k: jax.numpy.asarray(v, jax.numpy.float32) for k, v in saved_head.items()}
        else:
            trunk = hf.load_any(config.prm.path, mesh=mesh, dtype=config.model.param_dtype)[0] if config.prm.path \
                else policy_params
        copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)  # noqa: E731
        if prm_cfg.lora_rank:  # an adapter on a frozen trunk: the policy's base itself when both start alike
            trained = trunk is policy_params and base is None  # the policy trains these very weights
            prm_base = copy(trunk) if trained else trunk
            trunk = lora.init_adapter(prm_cfg, jax.random.fold_in(seed, 5))
        elif trunk is policy_params:
            trunk = copy(trunk)  # trained: its own copy
        prm = prm_heads.get(config).tree(trunk, head)
    ref = None
    if train.needs_ref(config):
        ref = base if base is not None else jax.tree.map(lambda x: x.copy(), policy_params)  # frozen either way
    return train.Models(pcfg, policy, prm, ref, prm_cfg=prm_cfg if prm_cfg != pcfg else None, base=base,
                        prm_base=prm_base)


LORA_BASES = "lora_bases.json"


def record_lora_bases(config, workdir: str, models, warmed_up: bool) -> dict:
    """WORKDIR/lora_bases.json: where each LoRA model's frozen base lives (a model directory) and its
    fingerprint (lora.fingerprint). Checkpoints hold only adapters, so a resumed run, `evaluate --checkpoint`
    and exports read the base from there; a base that changed since is an error. A base that is no model
    directory (a random init, a training run's policy) is written to WORKDIR/base or WORKDIR/prm_base."""

    file = os.path.join(workdir, LORA_BASES)
    saved = json.load(open(file)) if os.path.exists(file) else {}
    out = {}
    for name, params, source in (("policy", models.base, "warmup" if warmed_up else config.model.path),
                                 ("prm", models.prm_base, config.prm.path)):
        if params is None:
            continue
        if name == "prm" and params is models.base:
            out[name] = out["policy"]
            continue
        path = os.path.join(workdir, "warmup") if source == "warmup" else source
        if not path or _is_run_dir(path):
            path = os.path.join(workdir, "base" if name == "policy" else "prm_base")
            if not hf.is_params_dir(path):  # collective (orbax), atomic
                hf.save_params_dir(params, models.cfg.without_lora(), path)
        out[name] = {"path": os.path.abspath(path), "fingerprint": lora.fingerprint(path)}
        if name in saved and saved[name]["fingerprint"] != out[name]["fingerprint"]:
            raise ValueError(f"{file}: the {name}'s LoRA base {path} changed since this run started (fingerprint "
                             f"{saved[name]['fingerprint'][:12]}... now {out[name]['fingerprint'][:12]}...): its "
                             f"adapters were trained on the old one; restore that base or start a new workdir")
    if out and jax.process_index() == 0:
        with open(file, "w") as f:
            json.dump(out, f, indent=2)
    return out
