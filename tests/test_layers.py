"""The package's layers (tools/import_graph.py): every import points to a layer below, and no import cycle."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import import_graph  # noqa: E402


def test_package_imports_point_down_without_cycles():
    edges = import_graph.module_edges(import_graph.modules(import_graph.package_dir()))
    assert len(edges) > 50 and sum(map(len, edges.values())) > 100  # it read the package
    assert edges["repirl_jax.training.train"] >= {"repirl_jax.algorithms", "repirl_jax.generation.rollout"}
    assert import_graph.problems(edges) == []


def _write(root, rel, text=""):
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_checker_finds_upward_imports_and_cycles(tmp_path):
    pkg = str(tmp_path / "repirl_jax")
    for sub in ("models", "training"):
        _write(pkg, f"{sub}/__init__.py")
    _write(pkg, "__init__.py")
    _write(pkg, "models/qwen.py", "def f():\n    from repirl_jax.training import loop  # inside a function\n")
    _write(pkg, "training/loop.py", "from . import step\n")
    _write(pkg, "training/step.py", "import repirl_jax.training.loop\nfrom repirl_jax import models  # down: fine\n")
    _write(pkg, "widgets/__init__.py")
    edges = import_graph.module_edges(import_graph.modules(pkg))
    assert edges["repirl_jax.training.loop"] == {"repirl_jax.training.step"}
    found = import_graph.problems(edges)
    assert "repirl_jax.models.qwen -> repirl_jax.training.loop: models imports training, which is not below it" in found
    assert "import cycle: repirl_jax.training.loop -> repirl_jax.training.step" in found
    assert "repirl_jax.widgets: layer 'widgets' is not in LAYERS" in found
    assert len(found) == 3
