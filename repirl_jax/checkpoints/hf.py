"""HF safetensors <-> our parameter pytree, and our converted-checkpoint directory format.

Loading streams one tensor at a time from (memory-mapped) safetensors files into device arrays with the
target sharding: the whole model never exists as one host copy. Conversion keeps each tensor's dtype, so
HF -> ours -> HF is bit-identical. Writing is atomic: everything goes to a temporary sibling directory
that is renamed into place only when complete.

Our converted-checkpoint directory ("params dir"):
    config.json               the HF config (architecture; read by `QwenConfig.from_hf_dir`)
    generation_config.json, tokenizer files ...   carried through unchanged
    params/                   orbax checkpoint of the parameter pytree
    repirl_jax.json           {"format": "repirl_jax.params", "version": 1}
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import uuid
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from repirl_jax.checkpoints.run_dirs import load_hf_tokenizer, tokenizer_source
from repirl_jax.checkpoints.state import Checkpointer
from repirl_jax.generation import rollout
from repirl_jax.models import lora, qwen
from repirl_jax.models.config import QwenConfig
from repirl_jax.runtime import distributed

log = logging.getLogger(__name__)

FORMAT_FILE = "repirl_jax.json"
PARAMS_SUBDIR = "params"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
# Files copied unchanged between an HF directory and ours (whatever of these exists).
CARRIED_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
    "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
# HF tensors we know and do not need (buffers some exporters write).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointFormatError(ValueError):
    """Bad or incompatible checkpoint input; the message names the file and the tensor or field."""


# --- the name/layout table ---------------------------------------------------------------------------

def _linear(shape_out):  # HF [out, in] -> ours [in, *out_split]
    return (lambda w: w.T.reshape(shape_out)), (lambda a: a.reshape(a.shape[0], -1).T)


def _linear_heads_in(shape_out):  # o_proj: HF [E, H*D] -> ours [H, D, E]
    return (lambda w: w.T.reshape(shape_out)), (lambda a: a.reshape(-1, a.shape[-1]).T)


def _reshape(shape_out):
    return (lambda w: w.reshape(shape_out)), (lambda a: a.reshape(-1))


_COPY = (lambda w: w), (lambda a: a)


def param_table(cfg: QwenConfig) -> list[tuple[tuple[str, ...], str, tuple[int, ...], tuple[Callable, Callable]]]:
    """(our key path, HF tensor name, HF shape, (hf_to_ours, ours_to_hf)) for every parameter."""
    e, m, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    h, k, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    rows = [(("embed",), "model.embed_tokens.weight", (v, e), _COPY)]
    for i in range(cfg.num_hidden_layers):
        L, hf = f"layer_{i}", f"model.layers.{i}"
        rows += [
            ((L, "input_norm", "scale"), f"{hf}.input_layernorm.weight", (e,), _COPY),
            ((L, "post_attn_norm", "scale"), f"{hf}.post_attention_layernorm.weight", (e,), _COPY),
            ((L, "attn", "q_kernel"), f"{hf}.self_attn.q_proj.weight", (h * d, e), _linear((e, h, d))),
            ((L, "attn", "k_kernel"), f"{hf}.self_attn.k_proj.weight", (k * d, e), _linear((e, k, d))),
            ((L, "attn", "v_kernel"), f"{hf}.self_attn.v_proj.weight", (k * d, e), _linear((e, k, d))),
            ((L, "attn", "o_kernel"), f"{hf}.self_attn.o_proj.weight", (e, h * d), _linear_heads_in((h, d, e))),
            ((L, "mlp", "gate_kernel"), f"{hf}.mlp.gate_proj.weight", (m, e), _linear((e, m))),
            ((L, "mlp", "up_kernel"), f"{hf}.mlp.up_proj.weight", (m, e), _linear((e, m))),
            ((L, "mlp", "down_kernel"), f"{hf}.mlp.down_proj.weight", (e, m), _linear((m, e))),
        ]
        if cfg.qkv_bias:
            rows += [
                ((L, "attn", "q_bias"), f"{hf}.self_attn.q_proj.bias", (h * d,), _reshape((h, d))),
                ((L, "attn", "k_bias"), f"{hf}.self_attn.k_proj.bias", (k * d,), _reshape((k, d))),
                ((L, "attn", "v_bias"), f"{hf}.self_attn.v_proj.bias", (k * d,), _reshape((k, d))),
            ]
        if cfg.o_bias:
            rows.append(((L, "attn", "o_bias"), f"{hf}.self_attn.o_proj.bias", (e,), _COPY))
        if cfg.qk_norm:
            rows += [
                ((L, "attn", "q_norm", "scale"), f"{hf}.self_attn.q_norm.weight", (d,), _COPY),
                ((L, "attn", "k_norm", "scale"), f"{hf}.self_attn.k_norm.weight", (d,), _COPY),
            ]
    rows.append((("final_norm", "scale"), "model.norm.weight", (e,), _COPY))
    if not cfg.tie_word_embeddings:
        rows.append((("lm_head",), "lm_head.weight", (v, e), _linear((e, v))))
    return rows


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


# --- reading safetensors -----------------------------------------------------------------------------

def _tensor_files(hf_dir: str) -> dict[str, str]:
    """HF tensor name -> safetensors file that holds it (single file or sharded with an index)."""
    index = os.path.join(hf_dir, SAFETENSORS_INDEX)
    single = os.path.join(hf_dir, SAFETENSORS_SINGLE)
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointFormatError(f"{index}: expected JSON with a 'weight_map' object ({e!r})") from e
        out = {name: os.path.join(hf_dir, file) for name, file in weight_map.items()}
        for file in sorted(set(out.values())):
            if not os.path.exists(file):
                raise CheckpointFormatError(f"{index}: lists {os.path.basename(file)}, which does not exist")
        return out
    if os.path.exists(single):
        from safetensors import safe_open
        try:
            with safe_open(single, framework="numpy") as f:
                return {name: single for name in f.keys()}
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointFormatError(f"{single}: not a readable safetensors file ({e})") from e
    raise CheckpointFormatError(f"{hf_dir}: no {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX} found")


class _SafetensorsReader:
    """Opens each safetensors file once and reads tensors by name (memory-mapped)."""

    def __init__(self, hf_dir: str):
        self.files = _tensor_files(hf_dir)
        self._stack = contextlib.ExitStack()
        self._open: dict[str, Any] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def get(self, name: str) -> np.ndarray:
        from safetensors import safe_open
        file = self.files[name]
        try:
            if file not in self._open:
                self._open[file] = self._stack.enter_context(safe_open(file, framework="numpy"))
            return self._open[file].get_tensor(name)
        except Exception as e:
            raise CheckpointFormatError(f"{file}: tensor {name!r} could not be read ({e})") from e


def load_hf_params(hf_dir: str, cfg: QwenConfig | None = None, mesh: Mesh | None = None,
                   dtype: str | None = None) -> tuple[dict, QwenConfig]:
    """Parameters from an HF safetensors directory, streamed tensor by tensor onto `mesh` (or device 0).

    dtype None keeps each tensor's stored dtype (bit-exact round trips); else casts (e.g. "bfloat16").
    """
    cfg = cfg or QwenConfig.from_hf_dir(hf_dir)
    shardings = qwen.param_shardings(cfg, mesh)
    params: dict = {}
    with _SafetensorsReader(hf_dir) as reader:
        known = set()
        for path, name, hf_shape, (to_ours, _) in param_table(cfg):
            known.add(name)
            if name not in reader.files:
                raise CheckpointFormatError(
                    f"{hf_dir}: tensor {name!r} is missing (needed by model_type={cfg.model_type}, "
                    f"{cfg.num_hidden_layers} layers); the files hold {len(reader.files)} tensors")
            w = reader.get(name)
            if tuple(w.shape) != hf_shape:
                raise CheckpointFormatError(
                    f"{reader.files[name]}: tensor {name!r} has shape {tuple(w.shape)}, expected {hf_shape} "
                    f"from config.json")
            host = np.asarray(to_ours(w))
            if dtype is not None:
                host = host.astype(jnp.dtype(dtype))
            _set(params, path, _put(host, _get(shardings, path)))
            del w, host
        extra = [n for n in reader.files if n not in known and not n.endswith(_IGNORED_SUFFIXES)]
        if cfg.tie_word_embeddings and "lm_head.weight" in extra:
            extra.remove("lm_head.weight")  # some tied exports duplicate it; the embedding is the source
        if extra:
            log.warning("%s: %d tensors not used by the model, e.g. %s", hf_dir, len(extra), extra[:3])
    return params, cfg


def _put(host: np.ndarray, sharding) -> jax.Array:
    """Host array -> global device array; each process builds only the shards it holds."""
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


# --- writing safetensors ----------------------------------------------------------------------------

def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_hf_params(params: dict, cfg: QwenConfig, out_dir: str, max_shard_bytes: int = 4 * 2**30,
                   dtype: str | None = None) -> None:
    """Write `params` as HF safetensors into the existing directory `out_dir`.

    One file if it fits in `max_shard_bytes`, else numbered shards plus model.safetensors.index.json.
    Host memory holds at most one shard at a time. dtype None keeps each parameter's dtype.
    """
    from safetensors.numpy import save_file
    table = param_table(cfg)
    abstract = qwen.abstract_params(cfg)
    sizes = []
    for path, name, hf_shape, _ in table:
        leaf, expected = _get(params, path), _get(abstract, path).shape
        if tuple(leaf.shape) != tuple(expected):
            raise CheckpointFormatError(f"parameter {'/'.join(path)} has shape {tuple(leaf.shape)}, "
                                        f"expected {tuple(expected)} for this config")
        itemsize = jnp.dtype(dtype or leaf.dtype).itemsize
        sizes.append(math.prod(hf_shape) * itemsize)
    groups, current, current_bytes = [], [], 0
    for row, size in zip(table, sizes):
        if current and current_bytes + size > max_shard_bytes:
            groups.append(current)
            current, current_bytes = [], 0
        current.append(row)
        current_bytes += size
    groups.append(current)
    weight_map = {}
    write = jax.process_index() == 0
    for n, group in enumerate(groups):
        file = SAFETENSORS_SINGLE if len(groups) == 1 else f"model-{n + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for path, name, hf_shape, (_, to_hf) in group:
            host = _to_host(_get(params, path))
            if dtype is not None:
                host = host.astype(jnp.dtype(dtype))
            tensors[name] = np.ascontiguousarray(to_hf(host))
            weight_map[name] = file
        if write:
            save_file(tensors, os.path.join(out_dir, file), metadata={"format": "pt"})
        del tensors
    if write and len(groups) > 1:
        with open(os.path.join(out_dir, SAFETENSORS_INDEX), "w") as f:
            json.dump({"metadata": {"total_size": int(sum(sizes))}, "weight_map": weight_map}, f, indent=2)


# --- atomic directories ------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_directory(dst: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary sibling of `dst` to fill; renamed to `dst` only if the block succeeds.

    Multi-process (a shared file system): every process gets the same temporary directory, process 0
    creates and renames it, and the processes meet at barriers before and after the block."""
    dst = os.path.abspath(dst)
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst}: already exists (pass overwrite to replace it)")
    parent = os.path.dirname(dst)
    multi, main = jax.process_count() > 1, distributed.is_main()
    suffix = "shared" if multi else uuid.uuid4().hex[:8]
    tmp = os.path.join(parent, f".{os.path.basename(dst)}.tmp-{suffix}")
    if main:
        os.makedirs(parent, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a multi-process leftover of a crashed run
        os.makedirs(tmp)
    distributed.sync(f"atomic_directory:start:{dst}")
    try:
        yield tmp
        distributed.sync(f"atomic_directory:filled:{dst}")
        if main:
            if os.path.exists(dst):
                old = tmp + ".old"
                os.replace(dst, old)
                os.replace(tmp, dst)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, dst)
        distributed.sync(f"atomic_directory:done:{dst}")
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _carry_files(src: str, dst: str) -> None:
    for name in CARRIED_FILES:
        path = os.path.join(src, name)
        if os.path.exists(path):
            shutil.copy2(path, os.path.join(dst, name))


# --- our params directory ----------------------------------------------------------------------------

def save_params_dir(params: dict, cfg: QwenConfig, dst: str, carry_from: str | None = None,
                    overwrite: bool = False) -> None:
    """Write our params directory (orbax + config + carried files) atomically."""
    with atomic_directory(dst, overwrite) as tmp:
        main = jax.process_index() == 0  # small files from process 0; the orbax save is collective
        if carry_from and main:
            _carry_files(carry_from, tmp)
        if main and not os.path.exists(os.path.join(tmp, "config.json")):
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(cfg.to_hf_dict(), f, indent=2)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, PARAMS_SUBDIR), params)
            ckptr.wait_until_finished()
        if main:
            with open(os.path.join(tmp, FORMAT_FILE), "w") as f:
                json.dump({"format": "repirl_jax.params", "version": 1}, f)


def is_params_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, FORMAT_FILE))


def load_params_dir(src: str, mesh: Mesh | None = None, cfg: QwenConfig | None = None) -> tuple[dict, QwenConfig]:
    """Restore our params directory onto `mesh` (any mesh: orbax reshards), checking shapes against config."""
    src = os.path.abspath(src)  # orbax reads metadata only from absolute paths
    if not is_params_dir(src):
        raise CheckpointFormatError(f"{src}: not a repirl_jax params directory (no {FORMAT_FILE})")
    cfg = cfg or QwenConfig.from_hf_dir(src)
    abstract = qwen.abstract_params(cfg)
    shardings = qwen.param_shardings(cfg, mesh)
    path = os.path.join(src, PARAMS_SUBDIR)
    with ocp.StandardCheckpointer() as ckptr:
        saved = ckptr.metadata(path)
        saved_tree = getattr(saved, "item_metadata", saved)
        saved_tree = getattr(saved_tree, "tree", saved_tree)
        _check_tree_matches(saved_tree, abstract, src)
        # Keep the stored dtype (bf16 stays bf16); take shapes and shardings from the config.
        target = jax.tree.map(lambda a, s, sh: jax.ShapeDtypeStruct(a.shape, s.dtype, sharding=sh),
                              abstract, saved_tree, shardings)
        params = ckptr.restore(path, target)
    return params, cfg


def _check_tree_matches(saved, expected, src):
    flat_saved = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(saved)}
    flat_exp = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    missing = sorted(set(flat_exp) - set(flat_saved))
    if missing:
        raise CheckpointFormatError(f"{src}: checkpoint lacks parameter {missing[0]} (and {len(missing) - 1} "
                                    f"more): it was saved from an incompatible config")
    for key, exp in flat_exp.items():
        got = tuple(flat_saved[key].shape)
        if got != tuple(exp.shape):
            raise CheckpointFormatError(f"{src}: parameter {key} has shape {got} in the checkpoint but "
                                        f"{tuple(exp.shape)} under config.json: incompatible config")


def load_any(path: str, mesh: Mesh | None = None, dtype: str | None = None) -> tuple[dict, QwenConfig]:
    """Parameters from either an HF directory or our params directory."""
    if is_params_dir(path):
        params, cfg = load_params_dir(path, mesh)
        if dtype is not None:
            params = jax.tree.map(lambda x: x.astype(dtype), params)
        return params, cfg
    return load_hf_params(path, mesh=mesh, dtype=dtype)


def hf_to_params_dir(src: str, dst: str, mesh: Mesh | None = None, overwrite: bool = False) -> QwenConfig:
    params, cfg = load_hf_params(src, mesh=mesh)
    save_params_dir(params, cfg, dst, carry_from=src, overwrite=overwrite)
    return cfg


def params_dir_to_hf(src: str, dst: str, mesh: Mesh | None = None, overwrite: bool = False,
                     max_shard_bytes: int = 4 * 2**30) -> QwenConfig:
    params, cfg = load_params_dir(src, mesh)
    export_hf(params, cfg, dst, carry_from=src, overwrite=overwrite, max_shard_bytes=max_shard_bytes)
    return cfg


def export_hf(params: dict, cfg: QwenConfig, dst: str, carry_from: str | None = None, overwrite: bool = False,
              max_shard_bytes: int = 4 * 2**30) -> None:
    """Write an HF directory (safetensors + config.json + carried files) atomically."""
    with atomic_directory(dst, overwrite) as tmp:
        if carry_from:
            _carry_files(carry_from, tmp)
        if not os.path.exists(os.path.join(tmp, "config.json")):
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(cfg.to_hf_dict(), f, indent=2)
        save_hf_params(params, cfg, tmp, max_shard_bytes=max_shard_bytes)


def load_training_checkpoint(workdir: str, step: int | None = None, which: str = "policy"):
    """(params, QwenConfig, head or None, step) of a checkpoint written by repirl_jax.launch in `workdir`.

    which="policy": the policy's Qwen parameters; "prm": the PRM's trunk and its scalar head (an implicit
    PRM is a full Qwen model and comes back with head None). A LoRA model comes back merged (its adapter
    folded into the base that WORKDIR/lora_bases.json names): plain parameters of the base architecture."""
    adapter, cfg, head, step = load_training_adapter(workdir, step, which)
    if not lora.has_adapter(adapter):
        return adapter, cfg.without_lora(), head, step
    base, _ = load_any(_lora_base(workdir, which), dtype=str(jax.tree.leaves(adapter)[0].dtype))
    merged = jax.jit(lora.merge, static_argnums=1)(lora.join(base, adapter), cfg)
    return merged, cfg.without_lora(), head, step


def _lora_base(workdir: str, which: str) -> str:
    file = os.path.join(workdir, "lora_bases.json")
    if not os.path.exists(file):
        raise CheckpointFormatError(f"{file}: not found (the run's checkpoints hold LoRA adapters; this file names "
                                    "their base)")
    with open(file) as f:
        entry = json.load(f)[which]
    if lora.fingerprint(entry["path"]) != entry["fingerprint"]:
        raise CheckpointFormatError(f"{file}: the {which}'s LoRA base {entry['path']} has changed since the run "
                                    "trained its adapter")
    return entry["path"]


def load_training_adapter(workdir: str, step: int | None = None, which: str = "policy"):
    """(the model's trainable Qwen tree: its LoRA adapter, or all its parameters; its QwenConfig with the run's
    LoRA settings; scalar head or None; step) of a training run's checkpoint."""
    workdir = os.path.abspath(workdir)
    cfg_file = os.path.join(workdir, "model_config.json")
    if not os.path.exists(cfg_file):
        raise CheckpointFormatError(f"{cfg_file}: not found ({workdir} is not a training run directory)")
    with open(cfg_file) as f:
        cfg = QwenConfig.from_hf_dict(json.load(f), source=cfg_file)
    with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
        step = ckpt.latest_step() if step is None else step
        state, _ = ckpt.restore(step)
    run_file = os.path.join(workdir, "config.json")
    settings = {}
    if os.path.exists(run_file):
        with open(run_file) as f:
            settings = json.load(f).get(which, {}).get("lora", {})
    if settings.get("rank"):
        cfg = cfg.replace(lora_rank=settings["rank"], lora_alpha=settings["alpha"],
                          lora_targets=tuple(settings["targets"]))
    if which == "policy":
        return state["policy"]["model"], cfg, None, step
    if "prm" not in state:
        raise CheckpointFormatError(f"{workdir} step {step}: this run has no PRM")
    prm = state["prm"]
    if "trunk" in prm:
        return prm["trunk"], cfg, {k: np.asarray(v).tolist() for k, v in prm["head"].items()}, step
    return prm, cfg, None, step


def checkpoint_to_peft(workdir: str, dst: str, step: int | None = None, which: str = "policy",
                       overwrite: bool = False) -> QwenConfig:
    """Export a LoRA run's adapter in PEFT's format (adapter_config.json + adapter_model.safetensors, with the
    run's tokenizer files), to be loaded onto the transformers model of its base directory."""
    adapter, cfg, _, step = load_training_adapter(workdir, step, which)
    if not lora.has_adapter(adapter):
        raise CheckpointFormatError(f"{workdir}: the {which} has no LoRA adapter ({which}.lora.rank was 0); export "
                                    "the full weights with checkpoint_to_hf")
    with atomic_directory(dst, overwrite) as tmp:
        if jax.process_index() == 0:
            lora.export_peft(adapter, cfg, tmp, _lora_base(workdir, which))
            carry_run_tokenizer(workdir, cfg, tmp)
    return cfg


def checkpoint_to_hf(workdir: str, dst: str, step: int | None = None, which: str = "policy", overwrite: bool = False,
                     max_shard_bytes: int = 4 * 2**30) -> QwenConfig:
    """Export a training checkpoint's policy (or PRM trunk + prm_head.json) as an HF directory."""
    params, cfg, head, step = load_training_checkpoint(workdir, step, which)
    params = jax.tree.map(np.asarray, params)
    with atomic_directory(dst, overwrite) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg.to_hf_dict(), f, indent=2)
        save_hf_params(params, cfg, tmp, max_shard_bytes=max_shard_bytes)
        if head is not None:
            with open(os.path.join(tmp, "prm_head.json"), "w") as f:
                json.dump({"step": step, **head}, f)
        if jax.process_index() == 0:
            carry_run_tokenizer(workdir, cfg, tmp)
    return cfg


def carry_run_tokenizer(workdir: str, cfg: QwenConfig, dst: str) -> None:
    """Into the HF export `dst` of training run `workdir`: the run's tokenizer files (chat template
    included) and a generation_config.json (the source model's, if any) whose eos_token_id lists every
    end-of-turn id the run's sampler stopped at, so that transformers' generate stops where ours does."""
    try:
        tok_dir = tokenizer_source("", workdir)
    except (ValueError, OSError) as e:
        log.warning("%s: exported without tokenizer files (%s)", workdir, e)
        return
    if tok_dir == "synthetic":
        return
    for name in os.listdir(tok_dir):
        if name != "config.json" and os.path.isfile(os.path.join(tok_dir, name)):
            shutil.copyfile(os.path.join(tok_dir, name), os.path.join(dst, name))
    with open(os.path.join(workdir, "config.json")) as f:
        run = json.load(f)
    model_path = run.get("model", {}).get("path", "")
    chat = rollout.is_chat(run.get("data", {}).get("prompt_format", "raw"))
    gen = {}
    src_gen = os.path.join(model_path, "generation_config.json") if model_path else ""
    if src_gen and os.path.exists(src_gen):
        with open(src_gen) as f:
            gen = json.load(f)
    tok = load_hf_tokenizer(dst)
    stop = list(rollout.stop_token_ids(cfg, tok, chat=chat))
    gen.update(eos_token_id=stop if len(stop) > 1 else stop[0],
               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop[0])
    if tok.bos_token_id is not None:
        gen.setdefault("bos_token_id", tok.bos_token_id)
    with open(os.path.join(dst, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
