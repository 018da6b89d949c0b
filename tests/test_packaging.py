"""A clone that stands on its own: the repository's files alone (no ../shared, no REPIRL_SHARED) load every
benchmark and the tests' tokenizer, and the package installs with its data, configs and commands."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from repirl_jax.data import benchmarks
from tests.test_benchmarks import EXPECTED_ROWS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("repirl-train", "repirl-eval", "repirl-convert", "repirl-experts", "repirl-models")


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("REPIRL_SHARED", "PYTHONPATH")}
    return {**env, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", **extra}


def _copy_repo(dst) -> str:
    """The files a clone of this repository has (`git ls-files`, plus new files not yet committed and not
    ignored), copied into the empty directory `dst`."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing says which files a clone has")
    for rel in filter(None, out.decode().split("\0")):
        src = os.path.join(REPO, rel)
        if os.path.isfile(src):  # a tracked file deleted in the working tree is not in a clone of it
            os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel))
    return str(dst)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    return _copy_repo(tmp_path_factory.mktemp("clone") / "repirl_jax_clone")


_LOAD_ALL = """
import json, os, repirl_jax
from repirl_jax.config import paper_config
from repirl_jax.data import benchmarks
from repirl_jax.checkpoints.run_dirs import build_tokenizer
rows = {name: len(benchmarks.load(name)) for name in benchmarks.known_benchmarks()}
c = paper_config()
c.data.tokenizer = os.path.join("tests", "assets", "qwen_tokenizer")
tok = build_tokenizer(c)
prompt = benchmarks.build_prompt(benchmarks.load("math500", limit=1)[0], tok)
print(json.dumps({"package": repirl_jax.__file__, "files": benchmarks.FILES_DIR, "rows": rows,
                  "ids": tok("What is 2+3?")["input_ids"], "prompt": prompt[:40]}))
"""


def test_a_copy_of_the_repository_alone_loads_benchmarks_and_tokenizer(clone):
    """In a copy of the repository's files with nothing beside it: every short benchmark name loads from the
    copy's package, the tests' Qwen tokenizer loads from the copy through the package's loader, and
    launch finds its default config (configs/demo.py) in the copy."""
    import json
    assert not os.path.exists(os.path.join(os.path.dirname(clone), "shared"))
    env = _clean_env(PYTHONPATH=clone)
    r = subprocess.run([sys.executable, "-c", _LOAD_ALL], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(clone + os.sep) and got["files"].startswith(clone + os.sep)
    assert got["rows"] == EXPECTED_ROWS
    assert got["ids"] == [3838, 374, 220, 17, 10, 18, 30]
    assert got["prompt"].startswith("<|im_start|>user\nConvert the point")
    r = subprocess.run([sys.executable, "-m", "repirl_jax.launch", "--show_config", "--config.train.max_iterations=3"],
                       cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert any(line.startswith("--config.train.max_iterations=3") for line in r.stdout.splitlines())
    assert not os.path.exists(os.path.join(clone, "runs"))


@pytest.mark.parametrize("editable", [False, True], ids=["pip_install", "pip_install_editable"])
def test_pip_install_into_a_venv(clone, tmp_path, editable):
    """`pip install .` (and `-e .`) of a copy of the repository into a fresh virtual environment; then, from a
    directory outside the repository, the console commands run and the installed package loads its benchmark
    files and default configs. This checks packaging, entry points and package data, not dependency
    resolution: to stay fast the venv sees the system's site-packages (--system-site-packages; the pinned
    dependencies are installed there) and the install is `pip install --no-deps --no-build-isolation`."""
    import json
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py, bindir = str(venv / "bin" / "python"), venv / "bin"
    src = _copy_repo(tmp_path / "src") if editable else clone  # an editable install keeps pointing at its source
    r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                        *(["-e"] if editable else []), src], env=_clean_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for name in COMMANDS:
        assert (bindir / name).exists(), name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run([str(bindir / "repirl-eval"), "--help"], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=300)
    # absl's --help exits with status 1 (as python -m repirl_jax.evaluate --help does); it shows the module's
    # docstring and flags
    assert "Traceback" not in r.stderr and "Greedy pass@1 on math and code benchmarks" in r.stdout, r.stderr[-3000:]
    assert "--benchmarks:" in r.stdout and "--hf_dir:" in r.stdout
    code = ("import json, repirl_jax\nfrom repirl_jax import cli\nfrom repirl_jax.data import benchmarks\n"
            "print(json.dumps({'package': repirl_jax.__file__, 'configs': cli.configs_dir(), "
            "'files': benchmarks.FILES_DIR, "
            "'rows': {n: len(benchmarks.load(n)) for n in benchmarks.known_benchmarks()}}))")
    r = subprocess.run([py, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    home = src if editable else str(venv)
    assert got["package"].startswith(home + os.sep) and got["files"].startswith(home + os.sep), got
    assert got["configs"].startswith(home + os.sep) and os.path.isfile(os.path.join(got["configs"], "demo.py"))
    assert got["rows"] == EXPECTED_ROWS
    assert os.path.isfile(os.path.join(got["files"], "NOTICE.md"))  # the notice travels with the data
    r = subprocess.run([str(bindir / "repirl-train"), "--show_config"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "--config.warmup_bc.steps=280 " in r.stdout, r.stderr[-3000:]
    for name in ("repirl-convert", "repirl-experts"):
        r = subprocess.run([str(bindir / name), "--helpshort"], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=300)
        assert "Traceback" not in r.stderr and ("--src:" in r.stdout or "--prompts:" in r.stdout), (name, r.stderr)
    r = subprocess.run([str(bindir / "repirl-models"), "--help"], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "smollm2-135m-instruct" in r.stdout, r.stderr[-3000:]
    assert not os.path.exists(elsewhere / "runs") and not os.listdir(elsewhere)


def test_pyproject_lists_every_package_and_the_data():
    """pyproject's static package list (configs/ is mapped into the package, so packages are listed, not
    found) names every package directory, and its package-data globs cover every benchmark file."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    tool = project["tool"]["setuptools"]
    found = {os.path.relpath(os.path.dirname(p), REPO).replace(os.sep, ".")
             for p in glob.glob(os.path.join(REPO, "repirl_jax", "**", "__init__.py"), recursive=True)}
    assert set(tool["packages"]) == found | {"repirl_jax.configs"}
    assert tool["package-dir"] == {"repirl_jax.configs": "configs"}
    data_dir = os.path.join(REPO, "repirl_jax", "data")
    covered = {os.path.normpath(p) for g in tool["package-data"]["repirl_jax.data"]
               for p in glob.glob(os.path.join(data_dir, g))}
    shipped = {os.path.normpath(p) for p in glob.glob(os.path.join(benchmarks.FILES_DIR, "**", "*"), recursive=True)
               if os.path.isfile(p)}
    assert shipped == covered and len(shipped) == len(EXPECTED_ROWS) + 1  # the files and NOTICE.md
    assert {os.path.normpath(benchmarks.benchmark_path(n)) for n in EXPECTED_ROWS} <= shipped
    scripts = project["project"]["scripts"]
    assert set(scripts) == set(COMMANDS)
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "repirl_jax.__version__"}
    assert not glob.glob(os.path.join(REPO, "requirements*.txt"))  # pyproject is the one list


def test_no_run_time_path_to_a_shared_folder():
    """Nothing in the package reads a folder beside the checkout (../shared) or $REPIRL_SHARED."""
    bad = re.compile(r"REPIRL_SHARED|\.\./shared|shared_dir|join\([^)]*[\"']shared[\"']|/ *[\"']shared[\"']")
    hits = []
    for path in glob.glob(os.path.join(REPO, "repirl_jax", "**", "*.py"), recursive=True):
        for n, line in enumerate(open(path, encoding="utf-8"), start=1):
            if bad.search(line):
                hits.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
    assert not hits, hits
