"""LoRA adapters over a frozen base model: split, join, merge, PEFT export.

A model with adapters is the base parameter tree plus, for each targeted projection of each layer, two more
leaves beside its kernel (`models.qwen.lora_term`): `<name>_lora_a` [in, r] and `<name>_lora_b` [r, out...],

    y = x W + (alpha / r) (x A) B.

The adapter tree holds only those leaves (the same nesting), so

    base, adapter = split(params)            # frozen weights | trainable leaves
    params = join(base, adapter)             # the tree the model reads (no copies: dicts of the same arrays)
    plain = merge(params, cfg)               # W + (alpha / r) A B: the base layout, for the sampler and exports

A fresh adapter has B = 0, so the model is exactly its base. Training differentiates the adapter only (the
optimiser state covers the adapter only), and the policy and a likelihood PRM can be two adapters on one
base held once in memory; the reference model is the base itself.

`export_peft` writes what PEFT loads onto the transformers model (adapter_config.json and
adapter_model.safetensors with lora_A [r, in] / lora_B [out, r] per module).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from repirl_jax.models import qwen
from repirl_jax.models.config import QwenConfig

SUFFIXES = ("_lora_a", "_lora_b")
# Our projection names -> the transformers module names (Qwen2 / Qwen3 / Llama).
HF_MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
              "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def is_adapter_key(key: str) -> bool:
    return key.endswith(SUFFIXES)


def split(params: dict) -> tuple[dict, dict]:
    """(base, adapter): the same nesting, adapter leaves on one side, everything else on the other."""
    base, adapter = {}, {}
    for key, value in params.items():
        if isinstance(value, dict):
            b, a = split(value)
            if b:
                base[key] = b
            if a:
                adapter[key] = a
        elif is_adapter_key(key):
            adapter[key] = value
        else:
            base[key] = value
    return base, adapter


def join(base: dict | None, tree: dict) -> dict:
    """`tree` with `base`'s leaves added where it lacks them (a deep dict union; `base` None: `tree` as is).
    Works on any tree whose sub-dicts mirror base's: an adapter, {"model": adapter, ...}, {"trunk": ...}."""
    if base is None:
        return tree
    out = dict(base)
    for key, value in tree.items():
        out[key] = join(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def has_adapter(params: dict) -> bool:
    return any(is_adapter_key(k) or (isinstance(v, dict) and has_adapter(v)) for k, v in params.items())


def config_for(params: dict, cfg: QwenConfig) -> QwenConfig:
    """`cfg` if `params` carry adapters, else its base config (e.g. the reference model under a LoRA run)."""
    return cfg if has_adapter(params) else cfg.without_lora()


def init_adapter(cfg: QwenConfig, rng: jax.Array) -> dict:
    """A fresh adapter for `cfg` (A uniform, B zero: the model equals its base)."""
    return split(qwen.init_params(cfg, rng))[1]


def abstract_adapter(cfg: QwenConfig) -> dict:
    return split(qwen.abstract_params(cfg))[1]


def delta(a, b, scale: float, weight_shape) -> jax.Array:
    """(alpha / r) A B in the layout of the weight it modifies (float32)."""
    r = a.shape[-1]
    d = jnp.matmul(a.astype(jnp.float32), b.reshape(r, -1).astype(jnp.float32)) * scale
    return d.reshape(weight_shape)


def merge(params: dict, cfg: QwenConfig) -> dict:
    """The base layout with every adapter folded in: W + (alpha / r) A B in W's dtype (jittable)."""
    base, adapter = split(params)
    if not adapter:
        return params
    out = jax.tree.map(lambda x: x, base)  # new dicts, same arrays
    for layer, parts in adapter.items():
        for part, leaves in parts.items():
            for name in {k[:-len("_lora_a")] for k in leaves if k.endswith("_lora_a")}:
                w = out[layer][part][f"{name}_kernel"]
                d = delta(leaves[f"{name}_lora_a"], leaves[f"{name}_lora_b"], cfg.lora_scale, w.shape)
                out[layer][part][f"{name}_kernel"] = (w.astype(jnp.float32) + d).astype(w.dtype)
    return out


# --- files -----------------------------------------------------------------------------------------------

def fingerprint(path: str) -> str:
    """sha256 over a checkpoint directory's weight files (safetensors, or our params/ tree), in name order: what
    a run with adapters records of its base, and checks on resume."""
    files = []
    for root, _, names in os.walk(path):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), path)
            if n.endswith(".safetensors") or rel.startswith("params" + os.sep):
                files.append(rel)
    if not files:
        raise FileNotFoundError(f"{path}: no weight files to fingerprint")
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode())
        with open(os.path.join(path, rel), "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def peft_tensors(adapter: dict, cfg: QwenConfig) -> dict[str, np.ndarray]:
    """PEFT's tensor names and layouts: lora_A [r, in], lora_B [out, r] per module, float32."""
    out = {}
    for layer, parts in adapter.items():
        i = int(layer.split("_")[1])
        for leaves in parts.values():
            for key, value in leaves.items():
                name, which = key.rsplit("_lora_", 1)
                arr = np.asarray(value, np.float32)
                prefix = f"base_model.model.model.layers.{i}.{HF_MODULES[name]}"
                if which == "a":
                    out[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(arr.T)
                else:
                    out[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(arr.reshape(cfg.lora_rank, -1).T)
    return out


def peft_config(cfg: QwenConfig, base_path: str) -> dict[str, Any]:
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
            "r": cfg.lora_rank, "lora_alpha": cfg.lora_alpha, "lora_dropout": 0.0, "bias": "none",
            "target_modules": sorted(HF_MODULES[t].split(".")[1] for t in cfg.lora_targets),
            "fan_in_fan_out": False, "use_rslora": False, "init_lora_weights": True, "inference_mode": True}


def export_peft(adapter: dict, cfg: QwenConfig, dst: str, base_path: str) -> None:
    """adapter_config.json + adapter_model.safetensors in `dst` (created), loadable with
    `peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), dst)`."""
    from safetensors.numpy import save_file
    os.makedirs(dst, exist_ok=True)
    save_file(peft_tensors(adapter, cfg), os.path.join(dst, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(dst, "adapter_config.json"), "w") as f:
        json.dump(peft_config(cfg, base_path), f, indent=2)
