"""Training prompt sets: prompt, ground truth and expert demonstrations, from local files or tfds.

    records = load_prompt_set("train.jsonl")                       # fields: prompt, ground_truth, experts
    records = load_prompt_set("train.parquet", prompt_field="question", experts_field="solutions")
    records = load_prompt_set("tfds:gsm8k/main:train", prompt_field="question", answer_field="answer")

Every record: {"id", "prompt", "ground_truth", "experts": [str, ...], "domain", "metadata"}. Bad rows
(lines that are not JSON, missing fields, empty or non-string expert responses) raise PromptDataError naming the file, the row and
the field, or with on_bad_row="skip" are dropped and counted (`LoadReport`).

`format_prompt(problem, prompt_format, tokenizer)` is the text a model is prompted with (config
data.prompt_format: raw, or the chat template with the domain's instruction), for training and expert building.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator

from repirl_jax.data import synthetic
from repirl_jax.data.benchmarks import MATH_INSTRUCTION

PROMPT_FORMATS = ("raw", "chat_math", "chat_code", "chat_synthetic")  # config data.prompt_format
CODE_INSTRUCTION = "Answer with one complete Python program in a single ```python code block."


def format_prompt(problem: str, prompt_format: str, tokenizer: Any = None, modulus: int | None = None,
                  ops: str | None = None) -> str:
    """The text a model is prompted with for a training problem: the problem itself ("raw"), or one user turn
    of the tokenizer's chat template (generation prompt added) holding the problem and the instruction of the
    domain: chat_math (\\boxed{} answer), chat_code (a python block), chat_synthetic (the synthetic task's
    rules and a worked example at `modulus` with `ops`)."""
    if prompt_format == "raw":
        return problem
    if prompt_format == "chat_math":
        instruction = MATH_INSTRUCTION
    elif prompt_format == "chat_code":
        instruction = CODE_INSTRUCTION
    elif prompt_format == "chat_synthetic":
        instruction = synthetic.instruction(modulus or synthetic.MODULUS, ops or synthetic.OPS)
    else:
        raise ValueError(f"prompt_format={prompt_format!r}: expected one of {PROMPT_FORMATS}")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"prompt_format={prompt_format!r} needs a tokenizer with a chat template "
                         f"(use prompt_format='raw' for a base model)")
    return tokenizer.apply_chat_template([{"role": "user", "content": f"{problem}\n{instruction}"}],
                                         tokenize=False, add_generation_prompt=True)


class PromptDataError(ValueError):
    """A training row that cannot be used; the message names file, row and field."""


@dataclasses.dataclass
class LoadReport:
    path: str
    rows: int = 0
    kept: int = 0
    skipped: dict = dataclasses.field(default_factory=dict)  # reason -> count
    first_errors: list = dataclasses.field(default_factory=list)

    def skip(self, reason: str, message: str):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.first_errors) < 5:
            self.first_errors.append(message)


def _rows(path: str) -> Iterator[tuple[int, Any]]:
    if path.startswith("tfds:"):
        yield from _tfds_rows(path[5:])
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: prompt set not found")
    if path.endswith((".parquet", ".pq")):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from e
        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, row
        return
    with open(path) as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:  # a bad row like any other: raised or skipped by the caller
                row = PromptDataError(f"{path} line {i}: not valid JSON ({e.msg})")
            yield i, row


def _tfds_rows(spec: str) -> Iterator[tuple[int, Any]]:
    """tfds:NAME[:SPLIT] (split "train" by default) from a dataset already prepared in the local tfds data dir
    ($TFDS_DATA_DIR, else tfds' default); nothing is downloaded.

    NAME is a registered tfds dataset (e.g. gsm8k/main) or any dataset directory prepared there, found by its
    files. ArrayRecord datasets are read with `as_data_source`, which needs no TensorFlow; TFRecord datasets
    (tfds' default format) with `as_dataset`, which needs TensorFlow (the `tfds` extra: pip install -e ".[tfds]")."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("tfds: sources need the tfds extra: pip install -e \".[tfds]\" in the checkout") from e
    name, _, split = spec.partition(":")
    split = split or "train"
    data_dir = os.environ.get("TFDS_DATA_DIR")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise FileNotFoundError(f"tfds:{spec}: no dataset {name!r} registered or prepared in the tfds data dir "
                                f"({data_dir or 'tfds default'}): {e}") from e
    if not builder.is_prepared():
        raise FileNotFoundError(f"tfds:{spec}: {name!r} is not prepared in {builder.data_dir}; nothing is "
                                f"downloaded here: prepare it first (tfds build {name})")
    fmt = getattr(builder.info, "file_format", None)
    if getattr(fmt, "value", fmt) == "array_record":
        source = builder.as_data_source(split=split)
        for i in range(len(source)):
            yield i + 1, _plain(source[i])
        return
    for i, ex in enumerate(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)), start=1):
        yield i, _plain(ex)


def _plain(v):
    """A tfds example as plain Python: bytes -> str (also inside lists and dicts), numpy -> lists/scalars."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist"):  # numpy arrays and scalars
        return _plain(v.tolist())
    return v


def load_prompt_set(path: str, prompt_field: str = "prompt", answer_field: str = "ground_truth",
                    experts_field: str | None = "experts", id_field: str | None = "id", domain: str = "math",
                    on_bad_row: str = "error", require_experts: bool = True, limit: int | None = None
                    ) -> tuple[list[dict], LoadReport]:
    """Load a training prompt set (see module docstring). `experts_field=None`: no demonstrations."""
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row={on_bad_row!r}: expected error or skip")
    report = LoadReport(path)
    out = []
    for line, row in _rows(path):
        report.rows += 1
        where = f"{path} {'row' if path.endswith(('.parquet', '.pq')) or path.startswith('tfds:') else 'line'} {line}"
        try:
            if isinstance(row, PromptDataError):
                raise row
            out.append(_record(row, where, line, prompt_field, answer_field, experts_field, id_field, domain,
                               require_experts))
            report.kept += 1
        except PromptDataError as e:
            if on_bad_row == "error":
                raise
            report.skip(str(e).split(": ", 1)[1].split(" (")[0], str(e))
        if limit is not None and len(out) >= limit:
            break
    return out, report


def _record(row, where, line, prompt_field, answer_field, experts_field, id_field, domain, require_experts):
    if not isinstance(row, dict):
        raise PromptDataError(f"{where}: expected a JSON object, got {type(row).__name__}")

    def field(name):
        if name not in row:
            raise PromptDataError(f"{where}: missing field {name!r} (fields present: {sorted(row)})")
        if row[name] is None:
            raise PromptDataError(f"{where}: field {name!r} is null")
        return row[name]

    prompt = field(prompt_field)
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptDataError(f"{where}: field {prompt_field!r} must be a non-empty string")
    truth = field(answer_field)
    if isinstance(truth, str) and not truth.strip():
        raise PromptDataError(f"{where}: field {answer_field!r} is empty")
    experts: list[str] = []
    if experts_field is not None:
        raw = row.get(experts_field)
        if raw is None and require_experts:
            raise PromptDataError(f"{where}: missing field {experts_field!r} (fields present: {sorted(row)})")
        raw = [raw] if isinstance(raw, str) else (raw or [])
        for k, e in enumerate(raw):
            if not isinstance(e, str) or not e.strip():
                raise PromptDataError(f"{where}: field {experts_field!r}[{k}] is an empty or non-string response")
        if require_experts and not raw:
            raise PromptDataError(f"{where}: field {experts_field!r} is an empty list")
        experts = list(raw)
    rid = str(row[id_field]) if id_field and row.get(id_field) is not None else f"row-{line}"
    meta = {k: v for k, v in row.items() if k not in (prompt_field, answer_field, experts_field, id_field)}
    return {"id": rid, "prompt": prompt, "ground_truth": truth, "experts": experts, "domain": domain,
            "metadata": meta}
