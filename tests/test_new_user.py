"""A new user's path: the paper config's default dtype on the CPU, an HF export that transformers loads and
that generates our greedy tokens, evaluating a run directory, and bad input as one-line messages."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from repirl_jax import launch
from repirl_jax.checkpoints import run_dirs
from repirl_jax.data.benchmarks import benchmark_path
from repirl_jax.training import loop
from tests.test_tokenizer import QWEN_TOKENIZER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATH_TRAIN = benchmark_path("math_train")


def _env():
    return {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": REPO}


def tiny_qwen25(path, dtype="bfloat16"):
    """A random 2-layer Qwen2.5-format checkpoint (tied embeddings, Qwen's 151,936-row vocabulary, eos
    <|im_end|>) saved by transformers, with the real Qwen tokenizer files beside it."""
    import torch

    from tests import hf_models
    hf_models.build("qwen2_tied", str(path), dtype=getattr(torch, dtype), vocab_size=151936, hidden_size=32,
                    intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, eos_token_id=151645,
                    bos_token_id=151643)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(QWEN_TOKENIZER, name), os.path.join(path, name))
    return str(path)


def math_jsonl(path, n, experts=True):
    rows = [json.loads(line) for _, line in zip(range(n), open(MATH_TRAIN))]
    with open(path, "w") as f:
        for r in rows:
            row = {"prompt": r["problem"], "ground_truth": r["answer"]}
            if experts:
                row["experts"] = [f"So the answer is \\boxed{{{r['answer']}}}."]
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """One iteration of configs/qwen25_3b.py (model.dtype bfloat16, the paper's) on the CPU, from a tiny bf16
    checkpoint whose directory also holds the tokenizer (README's Train command: no data.tokenizer)."""
    root = tmp_path_factory.mktemp("paper")
    model = tiny_qwen25(root / "model")
    from repirl_jax.config import load_config_file
    c = load_config_file(os.path.join(REPO, "configs", "qwen25_3b.py"))
    assert c.model.dtype == "bfloat16"
    c.model.path, c.data.train = model, math_jsonl(root / "train.jsonl", 4)
    c.mesh.update(data=1, fsdp=1, tensor=1, devices=1)
    c.data.update(prompts_per_iter=2, long_prompts="truncate")
    c.policy.update(minibatch_prompts=2, micro_batch=2)
    c.prm.update(minibatch_prompts=2, micro_batch=2)
    c.rollout.update(n=2, max_prompt_len=192, max_response_len=8, prompts_per_call=2)
    c.train.update(max_iterations=1, async_checkpoint=False)
    c.reward.workers = 1
    workdir = str(root / "run")
    result = launch.run(c, workdir, progress_bar=False)
    return {"root": root, "model": model, "workdir": workdir, "summary": result.summary,
            "trainer": result.trainer}


def test_paper_dtype_runs_on_cpu(paper_run):
    import jax

    from repirl_jax.runtime import backend
    s = paper_run["summary"]
    rows = [json.loads(line) for line in open(os.path.join(paper_run["workdir"], "metrics.jsonl"))]
    assert [r["iteration"] for r in rows] == [1] and np.isfinite(rows[0]["policy_loss"])
    assert s["final_iteration"] == 1
    if jax.default_backend() == "cpu" and not backend.bf16_dots_supported():
        assert paper_run["trainer"].cfg.dtype == "float32"  # the fallback, not a crash
    assert backend.compute_dtype("float32") == "float32"
    assert os.path.exists(os.path.join(paper_run["workdir"], run_dirs.RUN_TOKENIZER, "tokenizer_config.json"))


def test_export_loads_in_transformers_and_generates_our_greedy_tokens(paper_run):
    import jax
    import torch
    import transformers

    from repirl_jax.checkpoints import hf
    from repirl_jax.generation import completions, rollout, sampling
    dst = str(paper_run["root"] / "export")
    hf.checkpoint_to_hf(paper_run["workdir"], dst)
    names = set(os.listdir(dst))
    assert {"tokenizer_config.json", "generation_config.json", "model.safetensors"} <= names
    src_tok = transformers.AutoTokenizer.from_pretrained(paper_run["model"])
    tok = transformers.AutoTokenizer.from_pretrained(dst)
    text = "What is 2+3? <|im_end|> \\boxed{\\frac{1}{2}} 変換"
    assert len(tok) == len(src_tok) > 150_000
    assert tok(text)["input_ids"] == src_tok(text)["input_ids"]
    assert tok.chat_template == src_tok.chat_template and tok.chat_template
    gen_cfg = json.load(open(os.path.join(dst, "generation_config.json")))
    params, cfg, _, _ = hf.load_training_checkpoint(paper_run["workdir"])
    # every id the run's sampler stops at (rollout.stop_token_ids: chat prompts end at <|im_end|>)
    assert set(np.atleast_1d(gen_cfg["eos_token_id"]).tolist()) == set(rollout.stop_token_ids(cfg, tok, chat=True))
    assert 151645 in np.atleast_1d(gen_cfg["eos_token_id"])  # <|im_end|>

    model = transformers.AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32).eval()
    ours = completions.TextGenerator(jax.device_put(params), cfg.replace(dtype="float32"), tok, 32, 2)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("What is 2+3?", "Name a prime.")]
    completions = ours.generate(prompts, sampling.SamplingConfig(max_new_tokens=10, greedy=True), jax.random.key(0))
    for prompt, (c,) in zip(prompts, completions):
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10)
        theirs = out[0, ids.shape[1]:].tolist()
        assert theirs[:len(c.token_ids)] == c.token_ids, (theirs, c.token_ids)


def test_evaluate_a_run_directory(paper_run, tmp_path):
    """evaluate --checkpoint=RUN_DIR of a run that took its tokenizer from model.path; rows store prompt and
    gold answer; the printed paths are absolute."""
    out = tmp_path / "ev"
    r = subprocess.run([sys.executable, "-m", "repirl_jax.evaluate", f"--checkpoint={paper_run['workdir']}",
                        "--benchmarks=math500", "--limit=2", f"--output_dir={out}", "--config.eval.max_new_tokens=4",
                        "--config.eval.max_prompt_len=192", "--config.eval.batch_size=2", "--config.mesh.fsdp=1",
                        "--config.eval.score_workers=1"],
                       cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in open(out / "math500.jsonl")]
    assert len(rows) == 2 and all(row["prompt"].startswith("<|im_start|>") and row["ground_truth"] for row in rows)
    assert f"{out}/math500.jsonl" in r.stdout and f"{out}/results.md" in r.stdout


def test_evaluate_help_has_no_stray_spaces():
    from repirl_jax import evaluate
    assert "        --" not in evaluate.__doc__.split("\n")[2]  # continuation lines stay lines
    assert "\\\n" in evaluate.__doc__


# --- bad input: one message, no traceback, no workdir ----------------------------------------------

def _cli(*args, cwd=REPO, module="repirl_jax.launch"):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)


def test_missing_config_file_is_a_message_and_leaves_no_workdir(tmp_path):
    r = _cli("--config=configs/no_such.py", f"--workdir={tmp_path / 'w'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3 and "no such config file" in r.stderr
    assert not (tmp_path / "w").exists()


def test_unknown_override_keeps_did_you_mean(tmp_path):
    r = _cli("--config.train.max_iteratons=3", f"--workdir={tmp_path / 'w'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert 'Did you mean "max_iterations"' in r.stderr and "--config.train.max_iteratons" in r.stderr
    r = _cli("--config.eval.max_new_token=3", module="repirl_jax.evaluate")
    assert r.returncode == 2 and 'Did you mean "max_new_tokens"' in r.stderr, r.stderr


@pytest.mark.parametrize("module,config,override,hint", [
    ("repirl_jax.launch", "configs/qwen25_3b.py", "--config.train.max_iteratons=1", "max_iterations"),
    ("repirl_jax.evaluate", "configs/eval.py", "--config.eval.max_new_tokns=3", "max_new_tokens"),
    ("repirl_jax.launch", "configs/demo.py", "--config.trainx.max_iterations=1", "train"),
])
def test_unknown_override_with_an_explicit_config(tmp_path, module, config, override, hint):
    """With --config=FILE ml_collections applies the overrides while absl parses the command line (without it,
    while the flag is defined): the same one-line message and exit status 2 either way, nothing on disk."""
    where = ([f"--output_dir={tmp_path / 'o'}", f"--hf_dir={tmp_path / 'model'}"] if module.endswith("evaluate")
             else [f"--workdir={tmp_path / 'w'}"])
    r = _cli(f"--config={os.path.join(REPO, config)}", override, *where, module=module, cwd=str(tmp_path))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    field = override.split("=")[0]
    assert lines[0].startswith(f"error: {field}: the config has no field ") and f'Did you mean "{hint}"' in lines[0]
    assert sorted(os.listdir(tmp_path)) == []


def test_unwritable_workdir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create or write"):
        launch.prepare_workdir(str(tmp_path / "file" / "run"))  # a path below a regular file (root too)


def test_empty_model_dir_and_empty_hf_dir(tmp_path):
    from repirl_jax import evaluate
    from repirl_jax.config import paper_config
    (tmp_path / "empty").mkdir()
    c = paper_config()
    c.model.path = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="no tokenizer files.*no config.json"):
        run_dirs.build_tokenizer(c)
    assert "the directory is empty" in evaluate.model_dir_problem(str(tmp_path / "empty"))
    assert "no such directory" in evaluate.model_dir_problem(str(tmp_path / "nope"))


def test_failed_launch_leaves_no_workdir(tmp_path):
    from tests.train_config import tiny_config
    c = tiny_config("rloo")
    c.data.update(train=str(tmp_path / "missing.jsonl"), tokenizer="synthetic", val="")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        launch.run(c, str(tmp_path / "w"), progress_bar=False)
    assert not (tmp_path / "w").exists()
    (tmp_path / "kept").mkdir()  # an existing directory is the user's: never removed
    with pytest.raises(FileNotFoundError):
        launch.run(c, str(tmp_path / "kept"), progress_bar=False)
    assert (tmp_path / "kept").is_dir()


def test_skip_counts_lines_that_are_not_json(tmp_path):
    from repirl_jax.data.prompts import PromptDataError, load_prompt_set
    path = tmp_path / "d.jsonl"
    good = json.dumps({"prompt": "p", "ground_truth": "1", "experts": ["\\boxed{1}"]})
    path.write_text(f"{good}\n{{not json\n{good}\n")
    rows, report = load_prompt_set(str(path), on_bad_row="skip")
    assert len(rows) == 2 and report.skipped == {"not valid JSON": 1} and report.rows == 3
    with pytest.raises(PromptDataError, match="line 2: not valid JSON"):
        load_prompt_set(str(path))


def test_gitignore_has_runs():
    lines = open(os.path.join(REPO, ".gitignore")).read().split()
    assert "/runs/" in lines


# --- a run that learns nothing says so ---------------------------------------------------------------

def test_empty_iterations_counted_and_reset():
    guard = loop.EmptyIterations(limit=3, filter_low=0.2, filter_high=0.8)
    for kept in (0, 0, 4, 0, 0):
        guard.update(1, {"prompts_kept": float(kept), "rollout_acc": 0.0})
    assert guard.total == 4 and guard.in_a_row == 2
    guard.update(6, {"policy_bc_nll": 1.0})  # no filter in BC iterations: not counted
    assert guard.total == 4
    with pytest.raises(ValueError, match="3 iterations in a row kept no prompt"):
        guard.update(7, {"prompts_kept": 0.0, "rollout_acc": 0.0})


def test_run_that_keeps_no_prompt_warns_and_stops(tmp_path, caplog):
    from tests.train_config import tiny_config
    c = tiny_config("rloo", **{"train.max_iterations": 3, "train.max_empty_iterations": 2})
    c.data.filter.update(enabled=True, low=0.99, high=1.0)  # the untrained policy solves nothing
    with caplog.at_level("WARNING", logger="repirl_jax"):
        with pytest.raises(ValueError, match="2 iterations in a row kept no prompt"):
            launch.run(c, str(tmp_path), progress_bar=False)
    warned = [r.getMessage() for r in caplog.records if "no prompt kept" in r.getMessage()]
    assert len(warned) == 2 and warned[0].startswith("iteration 1:")


# --- discoverable knobs and a README that matches the commands ------------------------------------------

def test_every_config_field_has_a_meaning():
    import glob

    from repirl_jax import config
    names = set()
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))) + [None]:
        if path and os.path.basename(path) == "eval.py":
            continue
        c = config.load_config_file(path) if path else config.paper_config()
        missing = [n for n, _, h in config.describe(c) if not h]
        assert not missing, (path, missing)
        names |= {n for n, _, _ in config.describe(c)}
    assert set(config.FIELD_HELP) <= names, set(config.FIELD_HELP) - names  # no line for a removed field


def test_show_config_prints_every_field(tmp_path):
    from repirl_jax import config
    r = _cli("--config=configs/qwen25_3b.py", "--show_config", "--config.policy.lr=1e-6",
             f"--workdir={tmp_path / 'w'}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(config.describe(config.paper_config()))
    assert any(line.startswith("--config.policy.lr=1e-06") and "[default: 5e-07]" in line for line in lines)
    assert not (tmp_path / "w").exists()


def _readme_commands():
    """(module or script, [args]) of every `python -m repirl_jax.X` / `python tools/X.py` line in README's
    bash blocks (continuation lines joined)."""
    import re
    import shlex
    text = open(os.path.join(REPO, "README.md")).read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            for part in cmd.split("&&"):
                part = part.split("#")[0].strip()
                m = re.match(r"python (?:-m (repirl_jax\.\w+)|(tools/\w+\.py))(.*)", part)
                if m:
                    out.append((m.group(1) or m.group(2), shlex.split(m.group(3))))
    return out


def test_readme_commands_parse():
    """Every README command names flags its program defines, config files that exist and config fields
    that exist (the commands themselves run at tiny shapes in this file and in test_make_experts.py)."""
    from repirl_jax.config import load_config_file
    commands = _readme_commands()
    programs = {p for p, _ in commands}
    assert {"repirl_jax.launch", "repirl_jax.evaluate", "repirl_jax.make_experts", "repirl_jax.convert"} <= programs
    helps = {}
    for program in programs:
        argv = ["-m", program] if program.startswith("repirl_jax") else [program]
        r = subprocess.run([sys.executable, *argv, "--helpfull"], cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=120)
        helps[program] = r.stdout + r.stderr
    for program, args in commands:
        default = "configs/eval.py" if program == "repirl_jax.evaluate" else "configs/demo.py"
        cfg_file = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), default)
        if program in ("repirl_jax.launch", "repirl_jax.evaluate"):
            assert os.path.exists(os.path.join(REPO, cfg_file)), (program, cfg_file)
            c = load_config_file(os.path.join(REPO, cfg_file))
        for a in args:
            if not a.startswith("--"):
                continue
            name = a[2:].split("=", 1)[0]
            if name.startswith("config."):
                node = c
                for key in name.split(".")[1:]:
                    assert key in node, (program, a)
                    node = node[key]
            elif program.startswith("tools/") and program != "tools/convert_hf.py":
                continue  # scripts with their own parsers
            else:
                flag = name[2:] if name.startswith("no") and f"--[no]{name[2:]}" in helps[program] else name
                assert f"--{flag}:" in helps[program] or f"--[no]{flag}:" in helps[program], (program, a)
