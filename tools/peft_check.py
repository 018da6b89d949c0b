"""A LoRA run's two exports read by the ecosystem: the PEFT adapter loaded by `peft` onto the transformers model
of the base, against the merged HF export, logits on one chat prompt (float32).

    python tools/peft_check.py BASE_HF_DIR PEFT_DIR MERGED_HF_DIR

PEFT_DIR from `python -m repirl_jax.convert --direction=checkpoint_to_peft --src=WORKDIR --dst=PEFT_DIR`,
MERGED_HF_DIR from `--direction=checkpoint_to_hf`. Prints both max |logit| differences: peft-loaded vs
merged (should be float32 rounding) and peft-loaded vs the base (what the adapter changed).
"""
import json
import os
import sys

import peft
import torch
import transformers

if len(sys.argv) != 4:
    sys.exit(__doc__)
base_dir, peft_dir, merged_dir = sys.argv[1:4]
tok = transformers.AutoTokenizer.from_pretrained(base_dir)
text = tok.apply_chat_template([{"role": "user", "content": "What is 12 * 7 - 5? Please reason step by step."}],
                               tokenize=False, add_generation_prompt=True)
ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
with torch.no_grad():
    lb = base(ids).logits
model = peft.PeftModel.from_pretrained(base, peft_dir).eval()
with torch.no_grad():
    lp = model(ids).logits
del model, base
merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
with torch.no_grad():
    lm = merged(ids).logits
print(json.load(open(os.path.join(peft_dir, "adapter_config.json"))))
print("adapter file MB", os.path.getsize(os.path.join(peft_dir, "adapter_model.safetensors")) / 1e6)
print("tokens", ids.shape[1], "logit scale (max abs)", float(lm.abs().max()))
print("peft-loaded vs merged export: max_abs_diff", float((lp - lm).abs().max()))
print("adapter's effect (peft-loaded vs base): max_abs_diff", float((lp - lb).abs().max()))
