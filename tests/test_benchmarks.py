"""Benchmark loaders (repirl_jax.data.benchmarks): the shipped files, generic files, errors and prompts."""

import json
import os
import sys

import pytest

from repirl_jax.data import benchmarks as B
from tests.test_tokenizer import QWEN_TOKENIZER

EXPECTED_ROWS = {"math500": 500, "aime24": 30, "amc23": 40, "minerva": 272, "olympiadbench": 675,
                 "gsm8k": 1319, "math_train": 7474, "leetcode": 180, "livecodebench": 279}
MATH_TRAIN_EMPTY = [886, 1009, 5328, 5330]  # upstream rows with a null or "" answer

_cache = {}


def records(name):
    if name not in _cache:
        _cache[name] = B.load(name)
    return _cache[name]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row))
            f.write("\n")
    return str(path)


# ------------------------------------------------------------------------------------------------ shipped files

def test_known_names_match_the_readme():
    assert B.known_benchmarks() == tuple(EXPECTED_ROWS)


@pytest.mark.parametrize("name", list(EXPECTED_ROWS))
def test_every_shipped_file_loads(name):
    recs = records(name)
    assert len(recs) == EXPECTED_ROWS[name]
    ids = [r["id"] for r in recs]
    assert len(set(ids)) == len(ids)
    for r in recs:
        assert set(r) == {"id", "benchmark", "domain", "problem", "ground_truth", "metadata"}
        assert r["benchmark"] == name and isinstance(r["id"], str) and r["id"]
        assert isinstance(r["problem"], str) and r["problem"].strip()
        assert isinstance(r["metadata"], dict) and r["metadata"]["source"]
        if r["domain"] == "math":
            assert isinstance(r["ground_truth"], str)
            if not r["metadata"].get("ground_truth_missing"):
                assert r["ground_truth"].strip() and r["ground_truth"] == r["ground_truth"].strip()
        else:
            assert r["domain"] == "code" and isinstance(r["ground_truth"], dict)
    missing = [i for i, r in enumerate(recs) if r["metadata"].get("ground_truth_missing")]
    assert missing == (MATH_TRAIN_EMPTY if name == "math_train" else [])


def test_math_spot_checks():
    r = records("math500")[0]
    assert r["id"] == "test/precalculus/807.json" and r["ground_truth"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert r["problem"].startswith("Convert the point $(0,3)$") and r["metadata"]["subject"] == "Precalculus"

    aime = records("aime24")
    assert (aime[0]["id"], aime[0]["ground_truth"]) == ("60", "204")
    assert aime[7]["ground_truth"] == "025"  # leading zeros kept as written

    amc = records("amc23")[0]
    assert (amc["id"], amc["ground_truth"], amc["metadata"]["raw_answer"]) == ("0", "27", 27.0)

    minerva = records("minerva")
    assert minerva[0]["ground_truth"] == "1.6"
    assert sum(r["ground_truth"] == "\\frac{\\pi}{2}" for r in minerva) >= 1  # nested braces

    ob = records("olympiadbench")
    assert (ob[0]["id"], ob[0]["ground_truth"], ob[0]["metadata"]["final_answer"]) == ("1606", "2", ["2"])
    multi = [r for r in ob if r["metadata"]["is_multiple_answer"]]
    assert len(multi) == 94 and all(isinstance(r["metadata"]["final_answer"], list) for r in multi)

    gsm = records("gsm8k")
    assert (gsm[0]["id"], gsm[0]["ground_truth"]) == ("0", "18")
    assert gsm[0]["metadata"]["solution"].endswith("#### 18")
    assert sum("," in r["ground_truth"] for r in gsm) == 14  # thousands separators kept as written

    mt = records("math_train")
    assert (mt[0]["id"], mt[0]["ground_truth"]) == ("math_train-0", "0")
    assert mt[886]["ground_truth"] == "" and mt[886]["metadata"]["source"] == "math_train.jsonl:887"


def test_math_train_empty_answers_policy():
    assert len(B.load("math_train", on_empty="skip")) == 7474 - len(MATH_TRAIN_EMPTY)
    with pytest.raises(B.BenchmarkDataError, match=r"math_train\.jsonl line 887: .*empty or null"):
        B.load("math_train", on_empty="error")


def test_leetcode_ground_truth_runs_a_correct_solution():
    r = records("leetcode")[0]
    gt = r["ground_truth"]
    assert r["id"] == "weekly-contest-381-minimum-number-of-pushes-to-type-word-i"
    assert gt["format"] == "assert" and gt["class_name"] == "Solution" and gt["entry_point"] == "minimumPushes"
    assert gt["test"].lstrip().startswith("my_solution = Solution()") and gt["test"].count("assert") == 100
    assert gt["starter_code"] == "class Solution:\n    def minimumPushes(self, word: str) -> int:"
    assert "You are given a string word" in r["problem"] and '"""' not in r["problem"]
    assert r["metadata"]["difficulty"] == "Easy"
    solution = ("class Solution:\n    def minimumPushes(self, word: str) -> int:\n"
                "        return sum(i // 8 + 1 for i in range(len(word)))\n")
    exec(gt["prelude"] + "\n" + solution + "\n" + gt["test"], {})
    with pytest.raises(AssertionError):
        exec(gt["prelude"] + "\n" + solution.replace("// 8", "// 9") + "\n" + gt["test"], {})
    # starter code that defines a helper class (ListNode) puts it in the prelude the tests rely on
    linked = [x for x in records("leetcode") if "ListNode" in x["ground_truth"]["test"]]
    assert len(linked) == 2 and all("class ListNode" in x["ground_truth"]["prelude"] for x in linked)


def test_livecodebench_ground_truth():
    recs = records("livecodebench")
    stdin = recs[0]["ground_truth"]
    assert stdin["format"] == "io" and stdin["testtype"] == "stdin" and stdin["fn_name"] is None
    assert stdin["tests"][0] == {"input": "4\n8 2 5 1\n", "output": "3\n", "testtype": "stdin"}
    functional = [r for r in recs if r["ground_truth"]["testtype"] == "functional"]
    assert len(functional) == 104 and len(recs) - len(functional) == 175
    gt = functional[0]["ground_truth"]
    assert gt["fn_name"] == "shortestDistanceAfterQueries" and gt["class_name"] == "Solution"
    assert gt["starter_code"].startswith("class Solution:")
    args = [json.loads(line) for line in gt["tests"][0]["input"].split("\n")]
    assert args == [5, [[2, 4], [0, 2], [0, 4]]] and json.loads(gt["tests"][0]["output"]) == [3, 2, 1]


def test_limit_takes_the_first_rows():
    first = B.load("gsm8k", limit=5)
    assert [r["id"] for r in first] == [r["id"] for r in records("gsm8k")[:5]]
    assert B.load("livecodebench", limit=3)[2]["id"] == "livecodebench-2"
    assert B.load("math500", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        B.load("math500", limit=-1)


def test_path_to_a_shipped_file_uses_its_layout():
    recs = B.load(B.benchmark_path("minerva"), limit=2)
    assert recs[0]["benchmark"] == "minerva" and recs[0]["ground_truth"] == "1.6"


def test_short_names_read_the_package_files(tmp_path, monkeypatch):
    """Short names resolve inside the package (no environment variable, no folder beside the checkout); a bad
    row of a shipped file is reported with its file, line and field."""
    assert B.benchmark_path("math500") == os.path.join(os.path.dirname(B.__file__), "benchmark_files", "math",
                                                       "math500.jsonl")
    assert os.path.exists(os.path.join(B.FILES_DIR, "NOTICE.md"))
    monkeypatch.setenv("REPIRL_SHARED", str(tmp_path / "nowhere"))  # the old variable is not read
    assert len(B.load("aime24")) == 30
    os.makedirs(tmp_path / "math")
    lines = open(B.benchmark_path("math500"), encoding="utf-8").read().splitlines()
    row = json.loads(lines[16])
    del row["answer"]
    lines[16] = json.dumps(row)
    write_jsonl(tmp_path / "math" / "math500.jsonl", lines)
    monkeypatch.setattr(B, "FILES_DIR", str(tmp_path))
    assert B.benchmark_path("math500") == str(tmp_path / "math" / "math500.jsonl")
    assert len(B.load("math500", limit=16)) == 16
    with pytest.raises(B.BenchmarkDataError, match=r"math500\.jsonl line 17: missing field 'answer'"):
        B.load("math500")


# ------------------------------------------------------------------------------------------------ generic files

def test_generic_jsonl_with_field_options(tmp_path):
    path = write_jsonl(tmp_path / "quiz.jsonl", [
        {"question": "1+1?", "answer": "2", "level": 1},
        "",
        {"question": "2+2?", "answer": 4, "level": 2},
    ])
    recs = B.load(path, prompt_field="question", answer_field="answer", id_field=None)
    assert [r["id"] for r in recs] == ["quiz-0", "quiz-1"]
    assert [r["ground_truth"] for r in recs] == ["2", "4"]
    assert recs[1] == {"id": "quiz-1", "benchmark": "quiz", "domain": "math", "problem": "2+2?",
                       "ground_truth": "4", "metadata": {"level": 2, "raw_answer": 4, "source": "quiz.jsonl:3"}}
    # defaults: problem/question/prompt and answer are found, "id" is used when present
    path2 = write_jsonl(tmp_path / "b.jsonl", [{"id": "q7", "problem": "p", "answer": ["1", "2"]}])
    assert B.load(path2, benchmark="mine")[0] | {"metadata": None} == {
        "id": "q7", "benchmark": "mine", "domain": "math", "problem": "p", "ground_truth": "1, 2", "metadata": None}
    path3 = write_jsonl(tmp_path / "c.jsonl", [{"q": "x", "sol": "so \\boxed{\\frac{1}{2}}.", "g": "a\n#### 1,000"}])
    assert B.load(path3, prompt_field="q", answer_field="sol", answer_format="boxed")[0]["ground_truth"] == "\\frac{1}{2}"
    assert B.load(path3, prompt_field="q", answer_field="g", answer_format="gsm8k")[0]["ground_truth"] == "1,000"


def test_generic_code_and_json_array(tmp_path):
    rows = [{"question": "Print the sum.", "tests": [{"input": "1 2\n", "output": "3\n"}]},
            {"question": "Add.", "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n",
             "tests": json.dumps([{"input": "1\n2", "output": "3", "testtype": "functional"}])},
            {"question": "Neg.", "test": "my_solution = Solution()\nassert my_solution.neg(x=1) == -1\n"}]
    path = tmp_path / "code.json"
    path.write_text(json.dumps(rows))
    recs = B.load(str(path), domain="code", limit=2)
    assert [r["ground_truth"]["testtype"] for r in recs] == ["stdin", "functional"]
    assert recs[1]["ground_truth"]["fn_name"] == "add" and recs[1]["ground_truth"]["tests"][0]["input"] == "1\n2"
    with pytest.raises(B.BenchmarkDataError, match=r"code\.json row 1: missing field 'test'"):
        B.load(str(path), domain="code", answer_field="test")
    recs = B.load(write_jsonl(tmp_path / "c.jsonl", rows[2:]), domain="code")
    assert recs[0]["ground_truth"]["format"] == "assert" and recs[0]["ground_truth"]["entry_point"] == "neg"
    assert "define a class `Solution` with a method `neg`" in B.build_prompt(recs[0])


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    table = pa.table({"uid": ["a", "b", "c"], "question": ["q1", "q2", "q3"], "answer": ["1", "2", None]})
    path = str(tmp_path / "set.parquet")
    pq.write_table(table, path)
    recs = B.load(path, answer_field="answer", id_field="uid", limit=2)
    assert [(r["id"], r["problem"], r["ground_truth"]) for r in recs] == [("a", "q1", "1"), ("b", "q2", "2")]
    with pytest.raises(B.BenchmarkDataError, match=r"set\.parquet row 3: .*empty or null"):
        B.load(path, id_field="uid")
    assert len(B.load(path, id_field="uid", on_empty="skip")) == 2


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"x\.parquet needs pyarrow.*pip install pyarrow"):
        B.load(str(path))


# ------------------------------------------------------------------------------------------------ bad input

def test_missing_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "math500.jsonl", [{"problem": "a", "answer": "1"}, "",
                                                    {"problem": "b", "solution": "2"}])
    with pytest.raises(B.BenchmarkDataError, match=r"math500\.jsonl line 3: missing field 'answer'"):
        B.load(path, answer_field="answer")
    with pytest.raises(B.BenchmarkDataError, match=r"line 3: missing field 'answer' .*set answer_field="):
        B.load(path)
    with pytest.raises(B.BenchmarkDataError, match=r"line 1: missing field 'question'"):
        B.load(path, prompt_field="question")
    with pytest.raises(B.BenchmarkDataError, match=r"line 1: missing field 'uid'"):
        B.load(path, id_field="uid")


def test_invalid_rows(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "a", "answer": "1"}, '{"problem": "b", "answer": '])
    with pytest.raises(B.BenchmarkDataError, match=r"bad\.jsonl line 2: invalid JSON"):
        B.load(path)
    assert len(B.load(path, limit=1)) == 1  # rows after the limit are not read
    path = write_jsonl(tmp_path / "list.jsonl", ["[1, 2]"])
    with pytest.raises(B.BenchmarkDataError, match=r"list\.jsonl line 1: expected a JSON object"):
        B.load(path)
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "problem": "a", "answer": "1"},
                                                {"id": 1, "problem": "b", "answer": "2"}])
    with pytest.raises(B.BenchmarkDataError, match=r"dup\.jsonl line 2: duplicate id '1' \(first seen at line 1\)"):
        B.load(path)
    path = write_jsonl(tmp_path / "types.jsonl", [{"problem": 5, "answer": "1"}])
    with pytest.raises(B.BenchmarkDataError, match=r"line 1: field 'problem' should be a string, got int"):
        B.load(path)
    path = write_jsonl(tmp_path / "code.jsonl", [{"problem": "p", "tests": [{"input": "1"}]}])
    with pytest.raises(B.BenchmarkDataError, match=r"code\.jsonl line 1: field 'tests'\[0\] is missing 'output'"):
        B.load(path, domain="code")


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(B.BenchmarkDataError, match=r"unknown benchmark 'aime25'; known names: math500, aime24, "
                                                   r"amc23, minerva, olympiadbench, gsm8k, math_train, leetcode, "
                                                   r"livecodebench"):
        B.load("aime25")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        B.load(str(tmp_path / "nope.jsonl"))
    with pytest.raises(TypeError, match="generic files only"):
        B.load("math500", prompt_field="question")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(B.BenchmarkDataError, match="unsupported file type"):
        B.load(str(tmp_path / "x.csv"))


def test_last_boxed():
    assert B.last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}}.") == "\\frac{a}{b}"
    assert B.last_boxed("\\boxed{\\left\\{ x \\right.}") == "\\left\\{ x \\right."
    assert B.last_boxed("\\fbox{7}") == "7" and B.last_boxed("so $\\boxed 5$") == "5"
    assert B.last_boxed("no answer") is None and B.last_boxed("\\boxed{2} \\boxed{3") == "2"


# ------------------------------------------------------------------------------------------------ prompts

def test_plain_prompts():
    math = B.build_prompt(records("aime24")[0])
    assert math.startswith("Every morning Aya") and math.endswith("\n" + B.MATH_INSTRUCTION)
    lc = B.build_prompt(records("leetcode")[0])
    assert "```python\nclass Solution:\n    def minimumPushes(self, word: str) -> int:\n```" in lc
    assert "single ```python code block" in lc
    stdin = B.build_prompt(records("livecodebench")[0])
    assert "standard input" in stdin and "standard output" in stdin and "class Solution" not in stdin
    functional = next(r for r in records("livecodebench") if r["ground_truth"]["testtype"] == "functional")
    assert "def shortestDistanceAfterQueries" in B.build_prompt(functional)


@pytest.fixture(scope="module")
def qwen():
    transformers = pytest.importorskip("transformers")
    assert os.path.exists(os.path.join(QWEN_TOKENIZER, "vocab.json")), f"missing {QWEN_TOKENIZER}"
    return transformers.AutoTokenizer.from_pretrained(QWEN_TOKENIZER)


@pytest.mark.parametrize("name", ["math500", "gsm8k", "leetcode", "livecodebench"])
def test_chat_template_prompts(qwen, name):
    record = records(name)[0]
    text = B.build_prompt(record, qwen)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert B.build_prompt(record) in text
    expected = B.MATH_INSTRUCTION if record["domain"] == "math" else "single ```python code block"
    assert expected in text


def test_tokenizer_without_chat_template_is_refused():
    class Tiny:
        chat_template = None

    with pytest.raises(ValueError, match="no chat template; pass tokenizer=None"):
        B.build_prompt(records("aime24")[0], Tiny())
