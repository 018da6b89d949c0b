"""The task's character tokenizer (duck-types a HuggingFace tokenizer)."""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import numpy as np

# --- tokenizer ---------------------------------------------------------------------------------------

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
CHARS = "0123456789+-*/%=#?:;,() \n"


class CharTokenizer:
    """One id per character; ids 0..3 are <pad>, <eos>, <bos>, <unk>. Duck-types a HuggingFace tokenizer:
    encode / __call__ / decode / batch_decode / convert_tokens_to_ids / convert_ids_to_tokens / get_vocab,
    eos/pad/bos/unk ids and strings, len() == vocab_size, chat_template None.

    encode: the special-token strings ("<eos>", ...) in the text map to their ids, every other character to
    its id; a character outside the vocabulary raises ValueError naming it. Nothing is added
    (add_special_tokens is accepted and ignored, like Qwen's tokenizers). decode: skip_special_tokens drops
    the specials (default False, like HF); ids outside the vocabulary (a model vocabulary rounded up) decode
    as <unk>."""

    is_char_level = True
    chat_template = None
    padding_side = "left"

    def __init__(self, chars: str = CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: duplicate characters in the vocabulary")
        self._id_to_token = list(SPECIAL_TOKENS) + list(chars)
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        self.pad_token, self.eos_token, self.bos_token, self.unk_token = SPECIAL_TOKENS
        self.pad_token_id, self.eos_token_id, self.bos_token_id, self.unk_token_id = 0, 1, 2, 3
        self.all_special_tokens = list(SPECIAL_TOKENS)
        self.all_special_ids = [0, 1, 2, 3]
        self._special_re = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def encode(self, text: str, add_special_tokens: bool = False, **_: Any) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: expected str, got {type(text).__name__}")
        ids: list[int] = []
        pos = 0
        for m in list(self._special_re.finditer(text)) + [None]:
            chunk_end = m.start() if m else len(text)
            for k in range(pos, chunk_end):
                ch = text[k]
                tid = self._token_to_id.get(ch)
                if tid is None or tid < len(SPECIAL_TOKENS):
                    raise ValueError(f"CharTokenizer: character {ch!r} (position {k} of {text[:40]!r}) is not in "
                                     f"the vocabulary {''.join(self._id_to_token[4:])!r}")
                ids.append(tid)
            if m:
                ids.append(self._token_to_id[m.group(0)])
                pos = m.end()
        return ids

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = False, **_: Any) -> dict:
        if isinstance(text, str):
            return {"input_ids": self.encode(text)}
        return {"input_ids": [self.encode(t) for t in text]}

    def _ids(self, ids: Any) -> list[int]:
        arr = np.asarray(ids).reshape(-1)
        return [int(i) for i in arr]

    def decode(self, ids: Any, skip_special_tokens: bool = False, **_: Any) -> str:
        out = []
        n_special = len(SPECIAL_TOKENS)
        for i in self._ids(ids):
            if not 0 <= i < self.vocab_size:
                i = self.unk_token_id
            if i < n_special and skip_special_tokens:
                continue
            out.append(self._id_to_token[i])
        return "".join(out)

    def batch_decode(self, seqs: Iterable[Any], skip_special_tokens: bool = False, **kw: Any) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in seqs]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of a token string (a special token or one character); the <unk> id if unknown."""
        if isinstance(tokens, str):
            return self._token_to_id.get(tokens, self.unk_token_id)
        return [self._token_to_id.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token[int(ids)] if 0 <= int(ids) < self.vocab_size else self.unk_token
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


_TOKENIZER: CharTokenizer | None = None


def get_tokenizer() -> CharTokenizer:
    """The shared default `CharTokenizer`."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = CharTokenizer()
    return _TOKENIZER
