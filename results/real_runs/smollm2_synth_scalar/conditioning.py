# usage: python conditioning.py HF_DIR (run from the repository root)
"""How sensitive are an export's logits to float32-sized rounding, position by position?

check_logits' fixed batch, against transformers in float64 (sdpa):
1. transformers float32 on the batch (left-padded) and on each row alone (no padding): two equally valid
   float32 evaluations that differ only in summation order;
2. ours float32 on the batch and on each row alone;
3. transformers float64 with its input embeddings perturbed by relative noise of 2^-24 (one float32 rounding
   of the inputs), 4 draws: how far one rounding at the input moves each logit (a lower bound on the
   conditioning).
Prints, per row, the largest |logit error| and where it is, for each."""
import sys

import jax.numpy as jnp
import numpy as np
import torch
import transformers

sys.path.insert(0, "tools")
from check_logits import fixed_batch  # noqa: E402

from repirl_jax import hf  # noqa: E402
from repirl_jax.models import qwen  # noqa: E402
from repirl_jax.models.config import QwenConfig  # noqa: E402

d = sys.argv[1]
torch.set_num_threads(2)
cfg = QwenConfig.from_hf_dir(d, dtype="float32")
tokens, mask = fixed_batch(cfg.vocab_size, 0)
m = mask[..., None].astype(bool)
ref32 = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
ref64 = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="sdpa").eval()
params, cfg = hf.load_hf_params(d, cfg=cfg, dtype="float32")


def ours_logits(tok, msk):
    t, k = jnp.asarray(tok), jnp.asarray(msk)
    hidden, _ = qwen.forward(params, cfg, t, qwen.positions_from_mask(k), k)
    return np.asarray(qwen.lm_logits(params, cfg, hidden)).astype(np.float64)


def hf_logits(model, tok, msk, embeds=None):
    with torch.no_grad():
        kw = {"inputs_embeds": embeds} if embeds is not None else {"input_ids": torch.tensor(tok)}
        return model(attention_mask=torch.tensor(msk), **kw).logits.double().numpy()


def alone(fn):
    """fn on each row with its padding removed, scattered back into the padded layout."""
    out = np.zeros(tokens.shape + (cfg.vocab_size,))
    for i in range(len(tokens)):
        real = mask[i].astype(bool)
        out[i, real] = fn(tokens[i:i + 1, real], mask[i:i + 1, real])[0]
    return out


r64 = hf_logits(ref64, tokens, mask)
scale = np.abs(np.where(m, r64, 0)).max()
runs = {
    "transformers f32, batched": hf_logits(ref32, tokens, mask),
    "transformers f32, each row alone": alone(lambda t, k: hf_logits(ref32, t, k)),
    "ours f32, batched": ours_logits(tokens, mask),
    "ours f32, each row alone": alone(ours_logits),
}
emb = ref64.get_input_embeddings()(torch.tensor(tokens))
gen = torch.Generator().manual_seed(0)
for draw in range(4):
    noise = 1 + 2.0 ** -24 * torch.randn(emb.shape, generator=gen, dtype=torch.float64)
    runs[f"transformers f64, inputs x (1 + 2^-24 noise) #{draw}"] = hf_logits(ref64, tokens, mask, emb * noise)

print(f"reference: transformers float64 (sdpa); max |logit| {scale:.3g}; rows {mask.sum(1).tolist()} real tokens")
for name, x in runs.items():
    e = np.where(m, np.abs(x - r64), 0).max(-1)  # [B, T]
    rows = " ".join(f"{e[i].max():.1e}@{int(e[i].argmax())}" for i in range(len(e)))
    print(f"{name:52s} max {e.max():.3e} (rel {e.max() / scale:.2e}); per row max@pos: {rows}")
