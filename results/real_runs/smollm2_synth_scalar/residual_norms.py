# usage: python residual_norms.py HF_DIR... (run from the repository root)
import sys, numpy as np, torch, transformers
sys.path.insert(0, "tools")
from check_logits import fixed_batch
for d in sys.argv[1:]:
    ref = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
    tokens, mask = fixed_batch(ref.config.vocab_size, 0)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask), output_hidden_states=True)
    hs = torch.stack(out.hidden_states)  # [L+1, B, T, E]
    n = hs.norm(dim=-1).max(0).values.numpy()  # [B, T] largest over layers
    print(d, "row 2 max residual norm per position", np.round(n[2, 9:], 0), "rows' median", np.round(np.median(n[mask == 1]), 0))
