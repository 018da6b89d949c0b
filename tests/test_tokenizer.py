"""The real Qwen BPE vocabulary (tests/assets/qwen_tokenizer, see its README) loads through transformers."""

import os

import pytest
import transformers

# The test asset every test that needs the real Qwen tokenizer reads (vocab.json, merges.txt,
# tokenizer_config.json; source and licence in its README.md).
QWEN_TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "qwen_tokenizer")


@pytest.fixture(scope="module")
def tok():
    assert os.path.exists(os.path.join(QWEN_TOKENIZER, "vocab.json")), f"missing {QWEN_TOKENIZER}"
    return transformers.AutoTokenizer.from_pretrained(QWEN_TOKENIZER)


def test_encodes_as_the_readme_says(tok):
    assert tok("What is 2+3?")["input_ids"] == [3838, 374, 220, 17, 10, 18, 30]
    assert tok.decode([3838, 374, 220, 17, 10, 18, 30]) == "What is 2+3?"


def test_special_tokens_and_vocabulary_size(tok):
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"])
    assert ids == [151643, 151644, 151645, 151667, 151668]
    assert len(tok) == 151669  # 151,643 BPE tokens + 26 added; model embeddings are padded to 151,936


def test_chat_template_renders_a_user_turn(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[0] == 151644 and 151645 in ids


def test_direct_load_is_autotokenizers_tokenizer_without_importing_torch(tok, tmp_path, monkeypatch):
    """run_dirs.load_hf_tokenizer loads a Qwen2Tokenizer directory through its class (no torch import) and
    gives what AutoTokenizer gives; any other class goes through AutoTokenizer."""
    import json
    import shutil
    import subprocess
    import sys

    from repirl_jax.checkpoints import run_dirs

    direct = run_dirs.load_hf_tokenizer(QWEN_TOKENIZER)
    assert type(direct) is type(tok) and len(direct) == len(tok)
    assert direct.get_vocab() == tok.get_vocab()
    assert (direct.pad_token_id, direct.eos_token_id, direct.bos_token_id) == (tok.pad_token_id, tok.eos_token_id,
                                                                             tok.bos_token_id)
    chat = [{"role": "user", "content": "Solve 2x + 3 = 7. <think>\u00e9\u4e2d</think>"}]
    assert direct.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + "  x = 2\n\n<|im_end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert direct(text, add_special_tokens=False)["input_ids"] == ids
    assert direct.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)

    other = tmp_path / "other"
    shutil.copytree(QWEN_TOKENIZER, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "LlamaTokenizer"}))
    calls = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda path: calls.append(path) or tok)
    assert run_dirs.load_hf_tokenizer(str(other)) is tok and calls == [str(other)]

    probe = ("import sys; from repirl_jax.checkpoints import run_dirs; "
             f"t = run_dirs.load_hf_tokenizer({QWEN_TOKENIZER!r}); print(len(t), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == [str(len(tok)), "False"]
