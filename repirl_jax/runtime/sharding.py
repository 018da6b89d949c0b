"""Device mesh and the ONE table that maps logical axes to mesh axes.

Every weight and activation names its logical axes (see `LOGICAL_AXIS_RULES`); this module turns those
names into `jax.sharding.NamedSharding`s for a mesh with axes (data, fsdp, tensor). The same model code
then runs on 1 CPU device, 8 simulated devices, 8 GPUs or a multi-host cluster: XLA inserts the
collectives (all-gather of fsdp-sharded weights, reduce-scatter / all-reduce of gradients, all-reduce
after tensor-parallel matmuls).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Weights: embed/heads/kv_heads/mlp/vocab/head_dim/norm.
# Activations: batch/length and the act_* names (the residual stream is not split over fsdp: only
# weights are; its batch dimension is split over data *and* fsdp, which is what makes fsdp data-parallel).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("lora", None),  # the rank of a LoRA adapter: A [in, r] and B [r, out] are split like the weight they modify
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes).

    -1 in one axis means "whatever is left". Raises ValueError naming the mismatch otherwise.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh (data={data}, fsdp={fsdp}, tensor={tensor}): at most one axis may be -1")
    if -1 in sizes:
        rest = math.prod(s for s in sizes if s != -1)
        if len(devices) % rest:
            raise ValueError(f"mesh (data={data}, fsdp={fsdp}, tensor={tensor}): {len(devices)} devices are not "
                             f"divisible by {rest} (on fewer devices set the axes to fit, e.g. --config.mesh.tensor=1 "
                             f"--config.mesh.data=1)")
        sizes[sizes.index(-1)] = len(devices) // rest
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh (data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}) needs {math.prod(sizes)} devices but "
            f"{len(devices)} are available; set mesh.data * mesh.fsdp * mesh.tensor = {len(devices)}")
    # Tensor-parallel groups on neighbouring devices (fastest links), then fsdp, then data.
    grid = np.array(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def data_parallel_rules(rules=LOGICAL_AXIS_RULES) -> tuple:
    """The table for a model whose weights are whole on every device (the sampler's replicated copy):
    rows split over every mesh axis, nothing else split."""
    return tuple((name, MESH_AXES if name == "batch" else None) for name, _ in rules)


def _rules_dict(rules) -> dict[str, tuple[str, ...]]:
    out = {}
    for name, target in rules:
        if target is None:
            out[name] = ()
        elif isinstance(target, str):
            out[name] = (target,)
        else:
            out[name] = tuple(target)
    return out


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_AXIS_RULES) -> P:
    """PartitionSpec for an array of `shape` whose dims are named `axes`.

    A mesh axis is used only if it divides the dimension and is not already used by an earlier dim;
    otherwise that dim stays replicated over it (e.g. 2 KV heads on a tensor axis of 4).
    """
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    table = _rules_dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
        chosen = []
        for mesh_axis in table[name]:
            n = mesh.shape[mesh_axis]
            if mesh_axis in used or n == 1:
                continue
            if size % (math.prod(mesh.shape[a] for a in chosen) * n) == 0:
                chosen.append(mesh_axis)
        used.update(chosen)
        spec.append(tuple(chosen) if len(chosen) > 1 else (chosen[0] if chosen else None))
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def logical_sharding(axes, shape, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


def tree_shardings(axes_tree, shapes_tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """NamedSharding for every leaf: `axes_tree` holds tuples of logical names (or PartitionSpecs of
    names), `shapes_tree` anything with `.shape` (arrays, ShapeDtypeStructs) with the same structure."""
    is_axes = lambda x: isinstance(x, (tuple, P)) and all(isinstance(a, (str, type(None))) for a in x)
    return jax.tree.map(lambda a, s: logical_sharding(tuple(a), s.shape, mesh, rules), axes_tree, shapes_tree,
                        is_leaf=is_axes)


def optimizer_shardings(optimizer, param_shardings, abstract_params, mesh: Mesh):
    """Shardings of an optax state: every params-shaped subtree (Adam moments, ...) sharded like the
    parameters, everything else (step counts, scalars) replicated on the mesh."""
    abstract_state = jax.eval_shape(optimizer.init, abstract_params)
    return optax.tree_map_params(optimizer, lambda _, s: s, abstract_state, param_shardings,
                                 transform_non_params=lambda _: NamedSharding(mesh, P()),
                                 is_leaf=lambda x: isinstance(x, NamedSharding))


@dataclasses.dataclass(frozen=True)
class ActivationSharding:
    """Sharding constraints for activations inside jit (passed to the model explicitly: no global rules)."""
    mesh: Mesh
    rules: tuple = LOGICAL_AXIS_RULES

    def constrain(self, x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
        return jax.lax.with_sharding_constraint(x, logical_sharding(axes, x.shape, self.mesh, self.rules))


def constrain(x, axes, act: ActivationSharding | None):
    """`x` unchanged without a mesh; otherwise constrained to the sharding its logical axes give."""
    return x if act is None else act.constrain(x, axes)
