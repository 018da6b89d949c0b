"""LoRA adapters (repirl_jax/lora.py, models.qwen.lora_term): a fresh adapter is the base exactly, adapter
gradients are the full-weight gradient projected, merging folds the same function, PEFT loads our export."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from repirl_jax.checkpoints import hf
from repirl_jax.models import lora, qwen
from repirl_jax.models.config import ConfigError, preset
from repirl_jax.runtime.sharding import make_mesh
from tests.test_qwen import _batch as qwen_batch

ALL = ("q", "k", "v", "o", "gate", "up", "down")


def _batch(vocab, seed=0, lengths=(9, 5, 1)):
    tokens, mask = qwen_batch(seed, lengths, vocab)
    return jnp.asarray(tokens), jnp.asarray(mask)


@functools.partial(jax.jit, static_argnums=1)
def _logits(params, cfg, tokens, mask):
    h, _ = qwen.forward(params, cfg, tokens, qwen.positions_from_mask(mask), mask)
    return qwen.lm_logits(params, cfg, h)


def _random_adapter(cfg, seed):
    """An adapter with B != 0 (a fresh one has B = 0)."""
    adapter = lora.init_adapter(cfg, jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(adapter)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(treedef, [x if x.shape[0] != cfg.lora_rank else 0.05 * jax.random.normal(k, x.shape)
                                        for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("preset_name", ["tiny-qwen2", "tiny-qwen3"])
def test_a_fresh_adapter_is_the_base_exactly(preset_name):
    base_cfg = preset(preset_name)
    cfg = base_cfg.replace(lora_rank=4, lora_targets=ALL)
    base = qwen.init_params(base_cfg, jax.random.key(0))
    adapter = lora.init_adapter(cfg, jax.random.key(1))
    assert all(float(jnp.abs(x).max()) > 0 for k, x in _leaves(adapter) if k.endswith("_lora_a"))
    assert all(float(jnp.abs(x).max()) == 0 for k, x in _leaves(adapter) if k.endswith("_lora_b"))
    tokens, mask = _batch(cfg.vocab_size)
    np.testing.assert_array_equal(np.asarray(_logits(lora.join(base, adapter), cfg, tokens, mask)),
                                  np.asarray(_logits(base, base_cfg, tokens, mask)))
    assert lora.split(lora.join(base, adapter))[1].keys() == adapter.keys()
    assert lora.config_for(base, cfg) == base_cfg and lora.config_for(lora.join(base, adapter), cfg) == cfg


def _leaves(tree):
    return [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_adapter_gradients_are_the_full_weight_gradient_projected():
    """dL/dA = s G B^T and dL/dB = s A^T G with G = dL/dW' at the merged weight W' = W + s A B; the merged
    model computes the same function as the unmerged one."""
    base_cfg = preset("tiny-qwen2")
    cfg = base_cfg.replace(lora_rank=3, lora_alpha=6.0, lora_targets=ALL)
    base = qwen.init_params(base_cfg, jax.random.key(0))
    adapter = _random_adapter(cfg, 2)
    tokens, mask = _batch(cfg.vocab_size, seed=1)
    target = jax.random.normal(jax.random.key(5), (3, tokens.shape[1], cfg.vocab_size))

    def loss(params, c):
        return jnp.sum(_logits(params, c, tokens, mask) * target * mask[..., None])
    merged = lora.merge(lora.join(base, adapter), cfg)
    np.testing.assert_allclose(np.asarray(_logits(merged, base_cfg, tokens, mask)),
                               np.asarray(_logits(lora.join(base, adapter), cfg, tokens, mask)), atol=2e-5)
    g_adapter = jax.grad(lambda a: loss(lora.join(base, a), cfg))(adapter)
    g_full = jax.grad(lambda p: loss(p, base_cfg))(merged)
    s = cfg.lora_scale
    for layer, parts in adapter.items():
        for part, leaves in parts.items():
            for name in ("q", "o", "gate", "down") if part == "attn" or part == "mlp" else ():
                if f"{name}_lora_a" not in leaves:
                    continue
                a, b = leaves[f"{name}_lora_a"], leaves[f"{name}_lora_b"]
                r = a.shape[1]
                g = g_full[layer][part][f"{name}_kernel"].reshape(a.shape[0], -1)  # [in, out]
                np.testing.assert_allclose(np.asarray(g_adapter[layer][part][f"{name}_lora_a"]),
                                           np.asarray(s * g @ b.reshape(r, -1).T), rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(np.asarray(g_adapter[layer][part][f"{name}_lora_b"]).reshape(r, -1),
                                           np.asarray(s * a.T @ g), rtol=1e-4, atol=1e-5)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_adapter)) > 1e-3


def test_adapters_are_sharded_like_the_weights_they_modify():
    mesh = make_mesh(1, 2, 4)
    cfg = preset("tiny-qwen2").replace(lora_rank=4, lora_targets=ALL)
    sh = qwen.param_shardings(cfg, mesh)["layer_0"]
    spec = lambda x, ndim: tuple(x.spec) + (None,) * (ndim - len(x.spec))  # noqa: E731
    assert spec(sh["attn"]["q_lora_a"], 2) == ("fsdp", None)  # like q's embed rows
    assert spec(sh["attn"]["q_lora_b"], 3) == (None, "tensor", None)  # like q's heads
    assert spec(sh["mlp"]["down_lora_a"], 2) == ("tensor", None)
    assert spec(sh["mlp"]["down_lora_b"], 2) == (None, "fsdp")


def test_bad_lora_configs_are_errors():
    with pytest.raises(ConfigError, match="needs targets"):
        preset("tiny-qwen2", lora_rank=4)
    with pytest.raises(ConfigError, match=r"lora_targets \['qkv'\]"):
        preset("tiny-qwen2", lora_rank=4, lora_targets=("qkv",))


@pytest.mark.parametrize("variant", ["qwen2_untied_bias", "llama_tied"])
def test_peft_loads_our_export_with_our_logits(tmp_path, hf_checkpoints, variant):
    peft = pytest.importorskip("peft")
    path = hf_checkpoints[variant]
    base, base_cfg = hf.load_hf_params(path)
    cfg = base_cfg.replace(lora_rank=4, lora_alpha=8.0, lora_targets=("q", "v", "o", "up", "down"))
    adapter = _random_adapter(cfg, 3)
    lora.export_peft(adapter, cfg, str(tmp_path / "adapter"), path)
    model = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), str(tmp_path / "adapter")).eval()
    tokens, mask = _batch(cfg.vocab_size, seed=4)
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(np.asarray(tokens)), attention_mask=torch.tensor(np.asarray(mask))
                       ).logits.numpy()
        plain = model.get_base_model()
        with model.disable_adapter():
            base_logits = plain(input_ids=torch.tensor(np.asarray(tokens))).logits.numpy()
    ours = np.asarray(_logits(lora.join(base, adapter), cfg, tokens, mask))
    m = np.asarray(mask)[..., None]
    assert np.abs((ours - theirs) * m).max() <= 1e-4
    assert np.abs((theirs - base_logits) * m).max() > 1e-2  # the adapter changes the logits: a real check
