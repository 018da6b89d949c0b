"""Saving and restoring the whole training state with an orbax `CheckpointManager`.

A checkpoint step directory holds two items:
  state/  every array of the run: policy and PRM params, optimiser states, step counter, RNG key data.
          Any pytree of jax/numpy arrays and python scalars. Sharded arrays are written shard by shard
          (OCDBT/TensorStore), so a step saved on one mesh restores onto any other mesh or device count.
  meta/   a JSON document: data-iterator position, the run config as a dict, metrics, ...

Typical use::

    ckpt = Checkpointer(run_dir / "checkpoints", max_to_keep=3, best_metric="eval_reward")
    ckpt.save(step, state, {"data": loader_pos, "config": cfg_dict, "metrics": {"eval_reward": r}})
    ...
    target = abstract_like(init_state, state_shardings)          # nothing allocated
    state, meta = ckpt.restore(target=target)                    # latest step, straight onto the mesh
    ckpt.close()

Crash safety (checked against orbax-checkpoint 0.12.8 on a local/POSIX filesystem): a step is written into
`<dir>/<step>.orbax-checkpoint-tmp/` and only when every item has been written does orbax add a
`commit_success.txt` and atomically rename the directory to `<dir>/<step>/`. Step listing ignores `*-tmp`
directories, so a crash (or kill) mid-save leaves earlier steps untouched and the half-written step
invisible. Old steps are deleted (keep-last-k) only after the new step has been committed, so a failed or
interrupted save never removes an earlier one. A writable `Checkpointer` removes stale `*-tmp` directories
when it is opened (a `read_only` one leaves them, so an evaluator can never delete a trainer's in-flight
save). On GCS orbax instead marks completion with `commit_success.txt` (no atomic rename there); the
listing also requires that file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Sharding, SingleDeviceSharding
from orbax.checkpoint import checkpoint_managers as ocm

__all__ = ["Checkpointer", "CheckpointError", "abstract_like"]

STATE_ITEM = "state"
META_ITEM = "meta"
_METRIC_KEY = "metrics"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be saved or restored (missing, incompatible, or failed I/O); the message says why."""


# --- targets ----------------------------------------------------------------------------------------

def _is_prng_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _default_sharding() -> Sharding:
    return SingleDeviceSharding(jax.local_devices()[0])


def abstract_like(tree, shardings=None):
    """`tree` with every array leaf replaced by a `jax.ShapeDtypeStruct` carrying a sharding: the
    `target` of `Checkpointer.restore`. Nothing is allocated.

    `tree`: arrays (jax or numpy), ShapeDtypeStructs (e.g. from `jax.eval_shape`) and python scalars.
    `shardings`: None (each jax.Array keeps its own `.sharding`, other arrays go to the first local
    device), one `Sharding` for every array leaf, or a pytree of Shardings with the structure of `tree`
    (e.g. from `sharding.tree_shardings`). Python scalars are kept (restored as python scalars); numpy
    arrays without a sharding are kept (restored as numpy arrays).
    """

    def one(x, sharding):
        if isinstance(x, (bool, int, float, complex, str)) or x is None:
            return x
        if isinstance(x, np.ndarray) and sharding is None:
            return x
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(f"abstract_like: unsupported leaf of type {type(x).__name__}")
        if sharding is None:
            sharding = getattr(x, "sharding", None) if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) else None
        if sharding is None:
            sharding = _default_sharding()
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    if shardings is None or isinstance(shardings, Sharding):
        return jax.tree.map(lambda x: one(x, shardings), tree)
    return jax.tree.map(one, tree, shardings)


def _path_str(path) -> str:
    """A key path as 'a/0/b': dict keys, sequence indices and attribute names (namedtuple / dataclass
    fields) all become plain names, which is how orbax stores them."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    return "/".join(parts) or "<root>"


def _stored_shape(leaf) -> tuple[int, ...]:
    """Shape the leaf has on disk (typed PRNG keys are stored as their uint32 key data)."""
    if _is_prng_key(leaf):
        return tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
    return tuple(np.shape(leaf))


def _target_from_metadata(md_tree):
    """Restore-as-saved target: jax arrays onto the first local device, numpy arrays as numpy, scalars
    as python scalars (containers come back as orbax stores them: dicts and lists)."""

    def one(m):
        if isinstance(m, ocp.metadata.ScalarMetadata):
            return np.zeros((), m.dtype).item()
        if isinstance(m, ocp.metadata.StringMetadata):
            return ""
        if isinstance(m, ocp.metadata.ArrayMetadata):
            if m.sharding is None:  # saved from a numpy array
                return np.zeros(m.shape, m.dtype)
            return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=_default_sharding())
        raise CheckpointError(f"unsupported value in checkpoint metadata: {m!r}")

    return jax.tree.map(one, md_tree)


# --- meta -------------------------------------------------------------------------------------------

def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, jax.Array)):
        return np.asarray(o).tolist()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serializable")


def _jsonable(meta: Mapping[str, Any] | None) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(dict(meta), default=_json_default))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"meta is not JSON-serialisable: {e}") from e


# --- the checkpointer -------------------------------------------------------------------------------

class _DropMessage(logging.Filter):
    """Drops log records whose message starts with `prefix` (an expected third-party warning)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


class Checkpointer:
    """Keep-last-k (plus optionally the best) checkpoints of a training run in `directory`.

    Args:
      directory: where step directories `<dir>/<step>/` go (local path or gs://...).
      max_to_keep: number of most recent steps kept; None keeps every step.
      async_save: `save` returns once arrays are copied to host memory; the write continues in a
        background thread (`wait` blocks until it is committed). At most one save is in flight: the next
        `save` first waits for the previous one.
      best_metric: if set, additionally keep the step with the best `meta["metrics"][best_metric]` (steps
        whose meta lacks it, or where it is NaN, are kept only by keep-last-k). `best_step()` returns it.
      best_mode: "max" or "min" for `best_metric`.
      read_only: never write or delete anything (for evaluators reading a live run's directory).
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 3, async_save: bool = True,
                 best_metric: str | None = None, best_mode: str = "max", read_only: bool = False):
        directory = os.fspath(directory)
        if "://" not in directory:
            directory = os.path.abspath(directory)
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep={max_to_keep}: expected None or >= 1")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode={best_mode!r}: expected 'max' or 'min'")
        self._directory = directory
        self._best_metric = best_metric
        self._read_only = read_only
        self._closed = False

        policies: list[ocm.PreservationPolicy] = [ocm.LatestN(n=max_to_keep)]
        best_fn = None
        if best_metric is not None:
            worst = -math.inf if best_mode == "max" else math.inf

            def best_fn(metrics) -> float:  # steps saved under another metric name rank last
                value = (metrics or {}).get(best_metric)
                return worst if value is None else float(value)

            policies.append(ocm.BestN(get_metric_fn=best_fn, reverse=(best_mode == "min"), n=1,
                                      keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            # `best_fn` is what makes orbax write/read per-step metrics and answer `best_step`; which steps are
            # kept is decided by `preservation_policy` only (latest k OR the single best).
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            save_interval_steps=0 if read_only else 1,  # (orbax warns unless read_only comes with 0)
            cleanup_tmp_directories=not read_only,
        )
        quiet = _DropMessage("Given directory is read only")  # orbax says so for every read-only open
        logging.getLogger("absl").addFilter(quiet)
        try:
            self._mngr = ocp.CheckpointManager(
                directory,
                options=options,
                item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(), META_ITEM: ocp.JsonCheckpointHandler()},
            )
        except Exception as e:  # noqa: BLE001 - surface as our error type
            raise CheckpointError(f"cannot open checkpoint directory {directory}: {type(e).__name__}: {e}") from e
        finally:
            logging.getLogger("absl").removeFilter(quiet)

    @property
    def directory(self) -> str:
        return self._directory

    # --- listing ---

    def all_steps(self) -> list[int]:
        """Committed steps, ascending (as known to this object; see `reload`)."""
        return sorted(int(s) for s in self._mngr.all_steps())

    def latest_step(self) -> int | None:
        """The most recent committed step, or None if there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The step with the best `best_metric` (the latest step if no `best_metric` was configured or no
        step has the metric)."""
        if self._best_metric is None:
            return self.latest_step()
        best = self._mngr.best_step()
        return int(best) if best is not None else self.latest_step()

    def reload(self) -> None:
        """Re-read the step list from storage (for steps written by another process)."""
        self._mngr.reload()

    # --- save ---

    def save(self, step: int, state, meta: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Save `state` (pytree of jax/numpy arrays and python scalars) and `meta` (JSON-able dict) as `step`.

        Returns True once the save has started (async) or finished (sync). Saving a step that already
        exists raises CheckpointError unless `force`, which deletes the existing step first (that one
        step is then not crash-safe: it is gone before the new one is committed). Typed PRNG keys are
        stored as their key data and come back typed if the restore target has a typed key there.
        `meta` goes through JSON: tuples become lists, dict keys become strings; numpy scalars/arrays and
        dataclasses are converted.
        """
        self._check_open()
        if self._read_only:
            raise CheckpointError(f"Checkpointer for {self._directory} is read-only")
        step = int(step)
        if step < 0:
            raise CheckpointError(f"step must be >= 0, got {step}")
        meta = _jsonable(meta)
        self.wait()  # the previous save must be committed before we look at / change the step list
        if step in self.all_steps():
            if not force:
                raise CheckpointError(f"step {step} already exists in {self._directory} (pass force=True to "
                                      f"overwrite it)")
            self._mngr.delete(step)
        # Numpy arrays are mutable: copy them so an async write cannot see later in-place changes. (Jax
        # arrays are immutable, and orbax copies them to host before `save` returns, so donating them to
        # the next train step right after `save` is fine.)
        state = jax.tree.map(lambda x: np.array(x, copy=True) if isinstance(x, np.ndarray) else x, state)
        metrics = None
        if self._best_metric is not None:
            value = (meta.get(_METRIC_KEY) or {}).get(self._best_metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics = {self._best_metric: float(value)}
        try:
            return bool(self._mngr.save(
                step,
                args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                           META_ITEM: ocp.args.JsonSave(meta)}),
                metrics=metrics,
                force=True,  # we decide when to save; bypass orbax's save-interval policy
            ))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"saving step {step} to {self._directory} failed: {type(e).__name__}: {e}") from e

    def wait(self) -> None:
        """Block until an in-flight async save is committed (and old steps pruned); raise CheckpointError
        if it failed."""
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"asynchronous save to {self._directory} failed: {type(e).__name__}: {e}") from e

    # --- restore ---

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None or step not in steps:
            self.reload()  # another process may have written since we listed
            steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self._directory}")
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise CheckpointError(f"step {step} not found in {self._directory}; available steps: {steps}")
        return int(step)

    def saved_structure(self, step: int | None = None):
        """What the `state` of `step` (default latest) holds, as a pytree of ShapeDtypeStructs (no
        sharding; containers as orbax stores them: dicts and lists). Reads metadata only."""
        self._check_open()
        step = self._resolve_step(step)
        md = self._state_metadata(step)
        return jax.tree.map(lambda m: "" if isinstance(m, ocp.metadata.StringMetadata)
                            else jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), md)

    def _state_metadata(self, step: int):
        try:
            md = self._mngr.item_metadata(step)[STATE_ITEM]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read metadata of step {step} in {self._directory}: "
                                  f"{type(e).__name__}: {e}") from e
        if md is None:
            raise CheckpointError(f"step {step} in {self._directory} has no '{STATE_ITEM}' item (not written by "
                                  f"this Checkpointer?)")
        return md.tree

    def restore(self, step: int | None = None, target=None):
        """Restore `(state, meta)` of `step` (default: the latest step).

        `target` (recommended): the pytree the state should come back as, typically
        `abstract_like(state_template, shardings)`; ShapeDtypeStruct leaves with a `sharding` are read
        straight onto that sharding, whatever mesh saved them. Concrete jax arrays are used as templates
        (their shape, dtype and sharding); leaves without a sharding go to the first local device. Its
        structure and shapes must match the checkpoint, otherwise CheckpointError names the first
        mismatching key path (dtypes may differ: values are cast).
        Without `target` the state is restored as saved onto the first local device, with containers as
        orbax stores them (namedtuples such as optax states become dicts, tuples become lists): pass a
        target to get the original pytree types back.
        """
        self._check_open()
        self.wait()
        step = self._resolve_step(step)
        md_tree = self._state_metadata(step)
        if target is None:
            target = _target_from_metadata(md_tree)
        else:
            target = abstract_like(target)
            self._check_compatible(step, md_tree, target)
        try:
            out = self._mngr.restore(step, args=ocp.args.Composite(**{
                STATE_ITEM: ocp.args.StandardRestore(target), META_ITEM: ocp.args.JsonRestore()}))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"restoring step {step} from {self._directory} failed: "
                                  f"{type(e).__name__}: {e}") from e
        meta = out[META_ITEM]
        return out[STATE_ITEM], (meta if meta is not None else {})

    def _check_compatible(self, step: int, md_tree, target) -> None:
        saved = {_path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(md_tree)[0]}
        wanted = [(_path_str(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(target)[0]]
        problems = []
        for key, leaf in wanted:
            if key not in saved:
                problems.append(f"'{key}' is in the target but not in the checkpoint")
                continue
            saved_shape, expected = tuple(saved[key].shape), _stored_shape(leaf)
            if saved_shape != expected:
                problems.append(f"'{key}': saved shape {saved_shape}, expected shape {expected}")
        wanted_keys = {k for k, _ in wanted}
        problems += [f"'{k}' is in the checkpoint but not in the target" for k in saved if k not in wanted_keys]
        if problems:
            more = f" ({len(problems) - 1} more mismatching leaves)" if len(problems) > 1 else ""
            raise CheckpointError(
                f"checkpoint step {step} in {self._directory} is incompatible with the restore target "
                f"(saved from an incompatible config or a different state layout?): first mismatch: "
                f"{problems[0]}{more}")

    # --- lifecycle ---

    def _check_open(self):
        if self._closed:
            raise CheckpointError(f"Checkpointer for {self._directory} is closed")

    def close(self) -> None:
        """Wait for an in-flight save, then release orbax resources. Idempotent."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            self._mngr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpointer({self._directory!r}, steps={self.all_steps()})"
