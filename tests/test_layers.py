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


def test_algorithms_see_only_the_engine_interface():
    """algorithms/ reads the trainer only through `training.engine.Engine` (its public members), and assigns
    none of them; no hook receives the Trainer itself."""
    import ast

    from repirl_jax.training.engine import Engine
    interface = {name for name in dir(Engine) if not name.startswith("_")}
    root = os.path.join(REPO, "repirl_jax", "algorithms")
    used, assigned, trainer_names = set(), [], []
    for fname in sorted(os.listdir(root)):
        if not fname.endswith(".py"):
            continue
        with open(os.path.join(root, fname)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "engine":
                used.add(node.attr)
                if isinstance(node.ctx, ast.Store):
                    assigned.append(f"{fname}: engine.{node.attr} = ...")
            if isinstance(node, ast.Name) and node.id in ("tr", "trainer", "Trainer"):
                trainer_names.append(f"{fname}:{node.lineno} {node.id}")
            if isinstance(node, ast.arg) and node.arg in ("tr", "trainer"):
                trainer_names.append(f"{fname}:{node.lineno} argument {node.arg}")
    assert {"config", "update_prm", "prm_step", "token_rewards", "logp", "sampler"} <= used  # it read them
    assert used <= interface, f"not in Engine's interface: {sorted(used - interface)}"
    assert not assigned and not trainer_names, (assigned, trainer_names)
