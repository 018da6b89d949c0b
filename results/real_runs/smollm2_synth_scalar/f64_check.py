# usage: python f64_check.py HF_DIR (run from the repository root)
"""Ours (float32) and transformers (float32) against transformers in float64 on an export: is the float32
difference rounding (both sides equally far from float64) or a mismatch (ours far, transformers near)?"""
import sys
import numpy as np, torch, transformers, jax.numpy as jnp
sys.path.insert(0, "tools")
from check_logits import fixed_batch
from repirl_jax import hf
from repirl_jax.models import qwen
from repirl_jax.models.config import QwenConfig
d = sys.argv[1]
torch.set_num_threads(2)
cfg = QwenConfig.from_hf_dir(d, dtype="float32")
tokens, mask = fixed_batch(cfg.vocab_size, 0)
m = mask[..., None]
ref32 = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
with torch.no_grad():
    r32 = ref32(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.double().numpy()
    r64 = ref32.double()(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
params, cfg = hf.load_hf_params(d, cfg=cfg, dtype="float32")
hidden, _ = qwen.forward(params, cfg, jnp.asarray(tokens), qwen.positions_from_mask(jnp.asarray(mask)), jnp.asarray(mask))
ours = np.asarray(qwen.lm_logits(params, cfg, hidden)).astype(np.float64)
scale = np.abs(r64 * m).max()
for name, x in (("ours f32 vs hf f64", ours), ("hf f32 vs hf f64", r32)):
    e = np.abs(x - r64) * m
    print(f"{name}: max abs {e.max():.3e} rel {e.max() / scale:.3e}, mean abs {e.sum() / (m.sum() * e.shape[-1]):.3e}")
e = np.abs(ours - r32) * m
print(f"ours f32 vs hf f32: max abs {e.max():.3e} rel {e.max() / scale:.3e}; scale {scale:.3g}")
