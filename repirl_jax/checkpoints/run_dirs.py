"""What a config or a training run directory names: the tokenizer to load, whether a path is a run.

Library code (launch, evaluate, make_experts, hf exports) reads these; no entry point imports another."""

from __future__ import annotations

import json
import os

from repirl_jax.data import synthetic


def build_tokenizer(config):
    if config.data.tokenizer == "synthetic":
        return synthetic.CharTokenizer()
    tok = load_hf_tokenizer(tokenizer_source(config.data.tokenizer, config.model.path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


# Tokenizer classes that load directly, as AutoTokenizer would load them (checked in tests/test_tokenizer.py).
# AutoTokenizer first builds the model's config, whose module imports torch (~2.5 s of a CLI's start); it
# stays the path for every other class, where it corrects some hub configurations.
DIRECT_TOKENIZER_CLASSES = ("Qwen2Tokenizer", "Qwen2TokenizerFast")


def load_hf_tokenizer(path: str):
    """transformers' tokenizer in directory `path`: the class its tokenizer_config.json names when that is one
    of DIRECT_TOKENIZER_CLASSES, else AutoTokenizer's choice."""
    import transformers
    name = None
    try:
        with open(os.path.join(path, "tokenizer_config.json")) as f:
            name = json.load(f).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        pass
    if name in DIRECT_TOKENIZER_CLASSES:
        return getattr(transformers, name.removesuffix("Fast")).from_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
RUN_TOKENIZER = "tokenizer"  # WORKDIR/tokenizer: the run's tokenizer, saved at its start


def tokenizer_source(tokenizer_path: str, model_path: str) -> str:
    """The directory to load the tokenizer from: `tokenizer_path`, else `model_path`; a training run
    directory gives its saved WORKDIR/tokenizer (or, for runs from before it was saved, the tokenizer its
    own config named). Raises ValueError naming the directory when it holds no tokenizer files."""
    path = tokenizer_path or model_path
    if not path:
        raise ValueError("data.tokenizer is empty and model.path is empty: set data.tokenizer to a local "
                         "tokenizer directory (or 'synthetic')")
    if path == "synthetic":
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory (the tokenizer comes from data.tokenizer, else "
                                f"model.path)")
    if os.path.exists(os.path.join(path, "model_config.json")):  # a training run directory
        if os.path.isdir(os.path.join(path, RUN_TOKENIZER)):
            return os.path.join(path, RUN_TOKENIZER)
        with open(os.path.join(path, "config.json")) as f:
            run_data, run_model = (lambda c: (c["data"], c["model"]))(json.load(f))
        return tokenizer_source(run_data.get("tokenizer", ""), run_model.get("path", ""))
    if not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
        has_config = os.path.exists(os.path.join(path, "config.json"))
        raise ValueError(f"{path}: no tokenizer files here ({', '.join(TOKENIZER_FILES)})"
                         + ("" if has_config else " and no config.json: is this the model directory?")
                         + "; point data.tokenizer (or model.path) at a directory that has them")
    return path


def save_run_tokenizer(tokenizer, workdir: str) -> None:
    """WORKDIR/tokenizer: the run's tokenizer files (chat template included), so that evaluation and every
    HF export of the run find it without the original model directory."""
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(os.path.join(workdir, RUN_TOKENIZER))


def is_run_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, "model_config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))
