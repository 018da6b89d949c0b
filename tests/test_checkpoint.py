"""Checkpointer: round trips, keep-last-k / best, async, resharding across meshes, errors, crash safety.

8 simulated CPU devices come from tests/conftest.py (XLA_FLAGS set before jax is imported).
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P
from jax.sharding import SingleDeviceSharding

from repirl_jax.checkpoints.state import Checkpointer, CheckpointError, _path_str, abstract_like
from repirl_jax.models import qwen
from repirl_jax.models.config import preset
from repirl_jax.runtime.sharding import make_mesh, tree_shardings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = ".orbax-checkpoint-tmp"


def by_path(tree):
    """{'a/0/b': leaf}: compares trees whose container types differ (namedtuple vs dict)."""
    return {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_same_values(got, want):
    g, w = by_path(got), by_path(want)
    assert sorted(g) == sorted(w)
    for k in w:
        np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(w[k]), err_msg=k)
        assert np.asarray(g[k]).dtype == np.asarray(w[k]).dtype, k


def train_state(seed=0):
    """Params dict, adamw state after one update (non-trivial mu/nu/count), step, RNG key data, numpy."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"dense": {"w": jax.random.normal(k1, (8, 16)), "b": jnp.zeros((16,))},
              "head": jax.random.normal(k2, (16, 4), jnp.bfloat16)}
    tx = optax.adamw(1e-3)
    opt = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt = tx.update(grads, opt, params)
    return {"params": params, "opt": opt, "step": jnp.asarray(7, jnp.int32),
            "rng": jax.random.key_data(jax.random.key(42)), "np_buf": np.arange(5, dtype=np.int64)}


META = {"data": {"epoch": 1, "index": 123}, "config": {"lr": 1e-3, "model": "tiny-qwen3", "mesh": [1, 8, 1]},
        "metrics": {"reward": 0.5}}


def test_round_trip_full_state(tmp_path):
    state = train_state()
    with Checkpointer(tmp_path / "ck") as ck:
        assert ck.save(3, state, META)
        ck.wait()
        # With a target: same pytree types (optax namedtuples), values, dtypes.
        got, meta = ck.restore(target=abstract_like(state))
        assert jax.tree.structure(got) == jax.tree.structure(state)
        assert isinstance(got["opt"][0], optax.ScaleByAdamState)
        assert_same_values(got, state)
        assert meta == META
        assert isinstance(got["np_buf"], np.ndarray)
        # Without a target: same values, containers as orbax stores them (dicts / lists).
        got2, meta2 = ck.restore(3)
        assert_same_values(got2, state)
        assert meta2 == META
        assert got2["rng"].dtype == jnp.uint32
        assert jax.random.key_data(jax.random.wrap_key_data(got2["rng"])).tolist() == state["rng"].tolist()
        shapes = ck.saved_structure()
        assert shapes["params"]["dense"]["w"].shape == (8, 16)


def test_typed_prng_key_round_trip(tmp_path):
    state = {"key": jax.random.key(5), "x": jnp.ones(3)}
    with Checkpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save(0, state)
        got, meta = ck.restore(target=abstract_like(state))
    assert meta == {}
    assert jax.dtypes.issubdtype(got["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(got["key"]), jax.random.key_data(state["key"]))


def test_keep_last_k_latest_and_async(tmp_path):
    d = tmp_path / "ck"
    with Checkpointer(d, max_to_keep=2, async_save=True) as ck:
        assert ck.latest_step() is None and ck.all_steps() == []
        for step in range(1, 5):
            x = jnp.full((64, 64), float(step))
            ck.save(step, {"x": x, "step": jnp.asarray(step)}, {"step": step})
            # async: orbax copied x to host before save returned, so the buffer may be donated/freed now
            x.delete()
        ck.wait()
        assert ck.all_steps() == [3, 4]
        assert ck.latest_step() == 4
        assert sorted(p.name for p in d.iterdir()) == ["3", "4"]
        state, meta = ck.restore()
        assert meta == {"step": 4}
        np.testing.assert_array_equal(state["x"], np.full((64, 64), 4.0, np.float32))
        with pytest.raises(CheckpointError, match="already exists"):
            ck.save(4, {"x": jnp.zeros(2)}, {})
        ck.save(4, {"x": jnp.zeros(2)}, {"v": 2}, force=True)
        assert ck.restore(4)[1] == {"v": 2}
    # A new Checkpointer (a restarted run) sees the same steps.
    with Checkpointer(d, max_to_keep=2) as ck2:
        assert ck2.all_steps() == [3, 4] and ck2.latest_step() == 4


def test_keep_best_by_metric(tmp_path):
    d = tmp_path / "ck"
    rewards = {1: 5.0, 2: 1.0, 3: 2.0, 4: None}
    with Checkpointer(d, max_to_keep=1, best_metric="reward", best_mode="max") as ck:
        for step, r in rewards.items():
            meta = {"metrics": {"reward": np.float32(r)}} if r is not None else {}
            ck.save(step, {"x": jnp.asarray(float(step))}, meta)
        ck.wait()
        assert ck.all_steps() == [1, 4]  # the best (1) and the latest (4)
        assert ck.best_step() == 1
        assert ck.restore(ck.best_step())[1] == {"metrics": {"reward": 5.0}}
    with Checkpointer(d, max_to_keep=1, best_metric="reward", read_only=True) as ck2:
        assert ck2.best_step() == 1
        with pytest.raises(CheckpointError, match="read-only"):
            ck2.save(9, {"x": jnp.zeros(())})


@pytest.fixture(scope="module")
def tiny():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices: see tests/conftest.py")
    cfg = preset("tiny-qwen3")
    # Random values with exactly the model's parameter tree (qwen.init_params works too but takes ~4 s
    # op-by-op on CPU; the checkpoint only cares about the tree, shapes and dtypes).
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), qwen.abstract_params(cfg))
    mesh = make_mesh(1, 8, 1)
    sharded = jax.device_put(params, tree_shardings(qwen.param_axes(cfg), params, mesh))
    return cfg, params, sharded


@pytest.fixture(scope="module")
def tiny_ckpt(tiny, tmp_path_factory):
    _, params, sharded = tiny
    assert any(len(a.sharding.device_set) == 8 and a.addressable_shards[0].data.shape != a.shape
               for a in jax.tree.leaves(sharded)), "nothing was sharded over fsdp"
    d = tmp_path_factory.mktemp("tiny") / "ck"
    with Checkpointer(d) as ck:
        ck.save(10, {"policy": sharded}, {"mesh": [1, 8, 1]})
    return d


@pytest.mark.parametrize("mesh_shape", [(1, 1, 1), (1, 4, 2)])
def test_restore_onto_other_mesh(tiny, tiny_ckpt, mesh_shape):
    cfg, params, _ = tiny
    n = int(np.prod(mesh_shape))
    mesh = make_mesh(*mesh_shape, devices=jax.devices()[:n])
    shardings = {"policy": tree_shardings(qwen.param_axes(cfg), qwen.abstract_params(cfg), mesh)}
    target = abstract_like({"policy": qwen.abstract_params(cfg)}, shardings)
    with Checkpointer(tiny_ckpt) as ck:
        got, meta = ck.restore(target=target)
    assert meta == {"mesh": [1, 8, 1]}
    assert_same_values(got["policy"], params)
    n_split = 0
    for (path, arr), sh in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(shardings)):
        assert arr.sharding == sh, _path_str(path)
        assert arr.sharding.mesh.devices.shape == mesh_shape
        for shard in arr.addressable_shards:
            assert shard.data.shape == sh.shard_shape(arr.shape), _path_str(path)
        n_split += arr.addressable_shards[0].data.shape != arr.shape
    if n > 1:  # on (1,4,2) weights really are split (e.g. q_kernel over fsdp and tensor)
        q = got["policy"]["layer_0"]["attn"]["q_kernel"]
        assert q.sharding.spec == P("fsdp", "tensor")
        assert q.addressable_shards[0].data.shape == (64 // 4, 4 // 2, 32)
        assert n_split > 0
    else:
        assert n_split == 0


def test_restore_without_target_after_sharded_save(tiny, tiny_ckpt):
    _, params, _ = tiny
    with Checkpointer(tiny_ckpt, read_only=True) as ck:
        got, _ = ck.restore()
    assert_same_values(got["policy"], params)
    leaf = jax.tree.leaves(got)[0]
    assert isinstance(leaf.sharding, SingleDeviceSharding)


def test_error_empty_dir(tmp_path):
    with Checkpointer(tmp_path / "empty") as ck:
        assert ck.latest_step() is None
        with pytest.raises(CheckpointError, match="no checkpoint found in .*empty"):
            ck.restore()
        with pytest.raises(CheckpointError, match="no checkpoint found"):
            ck.restore(3)


def test_error_missing_step(tmp_path):
    with Checkpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save(1, {"x": jnp.zeros(2)})
        ck.save(2, {"x": jnp.zeros(2)})
        with pytest.raises(CheckpointError) as e:
            ck.restore(7)
    assert "step 7 not found" in str(e.value) and "available steps: [1, 2]" in str(e.value)


def test_error_incompatible_config(tiny, tiny_ckpt):
    cfg, _, _ = tiny
    other = cfg.replace(hidden_size=96)
    mesh = make_mesh(1, 4, 2)
    abstract = qwen.abstract_params(other)
    target = abstract_like({"policy": abstract}, {"policy": tree_shardings(qwen.param_axes(other), abstract, mesh)})
    # first leaf (in flatten order) whose shape differs
    saved = by_path({"policy": qwen.abstract_params(cfg)})
    key, want = next((k, v) for k, v in by_path(target).items() if saved[k].shape != v.shape)
    with Checkpointer(tiny_ckpt, read_only=True) as ck:
        with pytest.raises(CheckpointError) as e:
            ck.restore(target=target)
    msg = str(e.value)
    assert "incompatible" in msg and "config" in msg
    assert f"'{key}'" in msg
    assert f"saved shape {tuple(saved[key].shape)}" in msg and f"expected shape {tuple(want.shape)}" in msg
    assert "Traceback" not in msg and len(msg) < 600


def test_error_structure_mismatch(tmp_path):
    state = train_state()
    with Checkpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save(1, state)
        missing = dict(state)
        del missing["rng"]
        with pytest.raises(CheckpointError, match="'rng' is in the checkpoint but not in the target"):
            ck.restore(target=abstract_like(missing))
        extra = dict(state, value_head=jnp.zeros((4,)))
        with pytest.raises(CheckpointError, match="'value_head' is in the target but not in the checkpoint"):
            ck.restore(target=abstract_like(extra))
        with pytest.raises(CheckpointError, match="not JSON-serialisable"):
            ck.save(2, state, {"bad": object()})


def test_crash_mid_save_keeps_earlier_steps(tmp_path):
    """Kill the process while an async save is being written: the earlier step must stay restorable and
    the half-written one must be invisible (then cleaned up by the next writable Checkpointer)."""
    d = tmp_path / "ck"
    script = textwrap.dedent(f"""
        import os, jax.numpy as jnp
        from repirl_jax.checkpoints.state import Checkpointer
        ck = Checkpointer({str(d)!r}, max_to_keep=1)
        ck.save(1, {{"x": jnp.arange(10.0)}}, {{"tag": "one"}})
        ck.wait()
        ck.save(2, {{"x": jnp.ones((4096, 4096))}}, {{"tag": "two"}})  # 64 MB, written in the background
        os._exit(17)  # hard crash: no wait(), no close(), no atexit
    """)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               XLA_FLAGS="")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    left_tmp = [p.name for p in d.iterdir() if TMP_MARK in p.name]
    with Checkpointer(d, max_to_keep=1) as ck:
        steps = ck.all_steps()
        assert steps and set(steps) <= {1, 2}
        if left_tmp:  # crashed mid-write (the usual case): step 2 is not listed, step 1 is intact
            assert steps == [1]
        for s in steps:
            state, meta = ck.restore(s)
            assert meta == {"tag": {1: "one", 2: "two"}[s]}
            want = np.arange(10.0, dtype=np.float32) if s == 1 else np.ones((4096, 4096), np.float32)
            np.testing.assert_array_equal(state["x"], want)
        ck.save(3, {"x": jnp.zeros(2)}, {"tag": "three"})
        ck.wait()
        assert ck.all_steps() == [3]
    assert not [p.name for p in d.iterdir() if TMP_MARK in p.name]
    print(f"left by the crash: {left_tmp or 'no temp dir (save finished before the kill)'}")
