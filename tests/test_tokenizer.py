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
