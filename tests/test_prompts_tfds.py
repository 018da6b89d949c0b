"""The optional `tfds:NAME[:SPLIT]` prompt source, on tiny datasets prepared here in a temporary tfds data dir.

Skipped when tensorflow_datasets is not importable: CI installs only the package and its `test` extra
(pip install -e ".[test]"), not the `tfds` extra, so these run where the tfds extra is installed. The
ArrayRecord test needs no TensorFlow; the TFRecord one (tfds' default format) also needs tensorflow."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from repirl_jax.data.prompts import PromptDataError, load_prompt_set  # noqa: E402

ROWS = {
    "train": [{"question": "What is 1+1?", "answer": "2", "solutions": ["1+1=2\n#2"], "idx": 10},
              {"question": "What is 2*3?", "answer": "6", "solutions": ["2*3=6\n#6", "3+3=6\n#6"], "idx": 11},
              {"question": "What is 9-4?", "answer": "5", "solutions": ["9-4=5\n#5"], "idx": 12}],
    "test": [{"question": "What is 7+8?", "answer": "15", "solutions": ["7+8=15\n#15"], "idx": 20},
             {"question": "What is 5*5?", "answer": "25", "solutions": [""], "idx": 21}],  # a bad row
}


class TinyMath(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Not registered: the loader has to find it by its files in the data dir, as a dataset prepared
    elsewhere and copied there would be."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "question": tfds.features.Text(), "answer": tfds.features.Text(),
            "solutions": tfds.features.Sequence(tfds.features.Text()),
            "idx": tfds.features.Scalar(dtype=np.int64)}))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in ROWS}

    def _generate_examples(self, split):
        for row in ROWS[split]:
            yield row["idx"], row


def _prepare(data_dir, file_format):
    TinyMath(data_dir=str(data_dir), file_format=file_format).download_and_prepare()


def _load(spec, **kw):
    return load_prompt_set(spec, prompt_field="question", answer_field="answer", experts_field="solutions",
                           id_field="idx", **kw)


def _check_train(records):
    expected = sorted(ROWS["train"], key=lambda r: r["idx"])
    got = sorted(records, key=lambda r: r["id"])
    assert [(r["id"], r["prompt"], r["ground_truth"], r["experts"]) for r in got] == \
        [(str(r["idx"]), r["question"], r["answer"], r["solutions"]) for r in expected]


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_tfds_prompt_source_reads_a_local_dataset(tmp_path, monkeypatch, file_format):
    if file_format == "tfrecord":
        pytest.importorskip("tensorflow")  # writing and reading TFRecord datasets goes through tf.data
    _prepare(tmp_path, file_format)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    records, report = _load("tfds:tiny_math")  # split defaults to train
    _check_train(records)
    assert report.rows == report.kept == 3
    assert all(isinstance(e, str) for r in records for e in r["experts"])  # bytes decoded inside lists too
    # A bad row is named (source, row, field), or skipped and counted.
    with pytest.raises(PromptDataError, match=r"tfds:tiny_math:test row \d: field 'solutions'\[0\] is an empty"):
        _load("tfds:tiny_math:test")
    records, report = _load("tfds:tiny_math:test", on_bad_row="skip")
    assert [r["prompt"] for r in records] == ["What is 7+8?"] and report.rows == 2 and report.kept == 1


def test_tfds_prompt_source_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tfds:no_such_set"):
        _load("tfds:no_such_set")
    with pytest.raises(FileNotFoundError, match="not prepared"):  # registered in tfds, absent here
        _load("tfds:mnist")
