"""A tiny stand-in for a real Qwen2.5 release: same file format (HF safetensors + the real Qwen tokenizer),
random weights, and small math / code prompt sets in the training format built from the shipped benchmarks.
The expert demonstrations are stand-ins (the paper's come from Claude-3.7-sonnet and are not shipped)."""

import json
import os
import shutil

from tests import hf_models
from tests.test_tokenizer import QWEN_TOKENIZER


def build(root: str) -> dict:
    from repirl_jax.data import benchmarks
    model = os.path.join(root, "Qwen2.5-standin")
    hf_models.build("qwen2_tied", model, vocab_size=151936, eos_token_id=151645)
    for name in os.listdir(QWEN_TOKENIZER):
        if name != "README.md":
            shutil.copy(os.path.join(QWEN_TOKENIZER, name), os.path.join(model, name))
    math_rows = [{"prompt": r["problem"], "ground_truth": r["ground_truth"],
                  "experts": [f"We compute carefully. The answer is $\\boxed{{{r['ground_truth']}}}$."]}
                 for r in benchmarks.load("gsm8k", limit=8)]
    code_rows = [{"prompt": r["problem"], "ground_truth": r["ground_truth"]["tests"],
                  "experts": ["```python\nprint(input())\n```"]}
                 for r in benchmarks.load("livecodebench", limit=40)
                 if r["ground_truth"]["testtype"] == "stdin" and len(r["problem"]) < 1200][:4]
    paths = {"model": model}
    for name, rows in (("math", math_rows), ("code", code_rows)):
        paths[name] = os.path.join(root, f"{name}_train.jsonl")
        with open(paths[name], "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return paths
