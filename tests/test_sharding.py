"""The same model and training step on 8 simulated devices under several meshes equals 1 device."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from repirl_jax.models import qwen
from repirl_jax.models.config import preset
from repirl_jax.runtime import sharding

CFG = preset("tiny-qwen2", vocab_size=512, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
             hidden_size=64, intermediate_size=256)


def _batch():
    rng = np.random.RandomState(0)
    tokens = rng.randint(1, CFG.vocab_size, size=(8, 24))
    mask = np.ones((8, 24), np.int32)
    for i in range(8):
        mask[i, : (3 * i) % 11] = 0  # left padding of mixed lengths
    return jnp.asarray(tokens * mask), jnp.asarray(mask)


def _loss(params, tokens, mask, act=None):
    h, _ = qwen.forward(params, CFG, tokens, qwen.positions_from_mask(mask), mask, act=act)
    logp = qwen.token_log_probs(qwen.lm_logits(params, CFG, h, act=act)[:, :-1], tokens[:, 1:])
    m = mask[:, 1:]
    return -(logp * m).sum() / m.sum()


# AdamW's first step is lr * g / (|g| + eps): with the default eps a gradient entry of 1e-9 whose sign
# flips under a different reduction order moves its parameter by 2 * lr. eps = lr makes the update
# 1-Lipschitz in the gradient, so parameter differences stay at the gradients' float rounding.
OPT = optax.adamw(1e-3, eps=1e-3)


def _train_step(params, opt_state, tokens, mask, act=None):
    loss, grads = jax.value_and_grad(_loss)(params, tokens, mask, act)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads


@functools.lru_cache(maxsize=1)
def _single_device_reference():
    params = qwen.init_params(CFG, jax.random.key(0))
    tokens, mask = _batch()
    step = jax.jit(_train_step)
    out = step(params, OPT.init(params), tokens, mask)
    h, _ = jax.jit(lambda p, t, m: qwen.forward(p, CFG, t, qwen.positions_from_mask(m), m))(params, tokens, mask)
    return params, jax.device_get(out), np.asarray(h)


def _collectives(hlo: str) -> set[str]:
    return set(re.findall(r"\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(",
                          hlo))


MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 4, 2)]


@pytest.mark.parametrize("mesh_shape", MESHES)
def test_sharded_forward_and_train_step_equal_single_device(mesh_shape):
    assert jax.device_count() == 8
    params, (ref_params, _, ref_loss, ref_grads), ref_hidden = _single_device_reference()
    mesh = sharding.make_mesh(*mesh_shape)
    act = sharding.ActivationSharding(mesh)
    p_shard = qwen.param_shardings(CFG, mesh)
    batch_shard = sharding.logical_sharding(("batch", "length"), (8, 24), mesh)
    sharded = jax.device_put(params, p_shard)
    o_shard = sharding.optimizer_shardings(OPT, p_shard, qwen.abstract_params(CFG), mesh)
    opt_state = jax.jit(OPT.init, out_shardings=o_shard)(sharded)
    assert opt_state[0].mu["layer_0"]["attn"]["q_kernel"].sharding == p_shard["layer_0"]["attn"]["q_kernel"]
    tokens, mask = (jax.device_put(x, batch_shard) for x in _batch())

    # Parameters really are sharded: shard shapes follow the rules table.
    data, fsdp, tensor = mesh_shape
    q = sharded["layer_0"]["attn"]["q_kernel"]  # [embed 64, heads 8, head_dim 8]
    assert {s.data.shape for s in q.addressable_shards} == {(64 // fsdp, 8 // tensor, 8)}
    down = sharded["layer_1"]["mlp"]["down_kernel"]  # [mlp 256, embed 64]
    assert {s.data.shape for s in down.addressable_shards} == {(256 // tensor, 64 // fsdp)}
    assert {s.data.shape for s in tokens.addressable_shards} == {(8 // (data * fsdp), 24)}

    fwd = jax.jit(lambda p, t, m: qwen.forward(p, CFG, t, qwen.positions_from_mask(m), m, act=act)[0])
    np.testing.assert_allclose(np.asarray(fwd(sharded, tokens, mask)), ref_hidden, atol=1e-5, rtol=1e-5)

    step = jax.jit(functools.partial(_train_step, act=act),
                   in_shardings=(p_shard, o_shard, batch_shard, batch_shard),
                   out_shardings=(p_shard, o_shard, None, p_shard))
    compiled = step.lower(sharded, opt_state, tokens, mask).compile()
    new_params, _, loss, grads = compiled(sharded, opt_state, tokens, mask)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    for path_and_g, r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
        path, g = path_and_g
        np.testing.assert_allclose(np.asarray(g), r, atol=1e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path))
    for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(ref_params)):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5, rtol=1e-5)
    # Updated parameters keep their sharding (no silent replication).
    assert new_params["layer_0"]["attn"]["q_kernel"].sharding.is_equivalent_to(q.sharding, 3)

    # The compiled program holds the collectives each kind of parallelism needs.
    found = _collectives(compiled.as_text())
    if fsdp > 1:
        assert "all-gather" in found, found  # weights gathered before use
    if data * fsdp > 1:
        assert found & {"all-reduce", "reduce-scatter"}, found  # gradient reduction over the batch
    if tensor > 1:
        assert "all-reduce" in found, found  # partial sums of tensor-parallel matmuls


def test_logical_to_spec_drops_axes_that_do_not_divide():
    mesh = sharding.make_mesh(1, 2, 4)
    # 2 KV heads cannot split over tensor=4: replicated on that dim instead of an error.
    assert sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), (64, 2, 8), mesh) == P("fsdp")
    assert sharding.logical_to_spec(("embed", "heads", "head_dim"), (64, 8, 8), mesh) == P("fsdp", "tensor")
    assert sharding.logical_to_spec(("batch", "length"), (6, 8), mesh) == P("fsdp")
    with pytest.raises(KeyError, match="no rule"):
        sharding.logical_to_spec(("nonsense",), (4,), mesh)


def test_make_mesh_errors_and_wildcard():
    assert dict(sharding.make_mesh(2, -1, 2).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match=r"needs 12 devices but 8 are available"):
        sharding.make_mesh(3, 2, 2)
