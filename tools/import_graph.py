"""The package's import graph, by layer: python tools/import_graph.py [--modules] [--dot=FILE]

Reads every `repirl_jax` import in the package (module level and inside functions) with `ast`, without
importing anything. Prints one line per layer with the layers it imports, and each arrow that points up or
sideways (a module importing from a layer above or beside its own) or closes a cycle; exits 1 if there is
one. `--modules` also lists the module-to-module edges; `--dot=FILE` writes the layer graph for Graphviz.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

PACKAGE = "repirl_jax"
# Bottom to top. A module may import from its own layer and from layers listed before it. Layers of one row
# (a tuple) are peers: neither imports the other.
LAYERS = (
    ("errors",),
    ("runtime",),
    ("models",),
    ("data",),
    ("rewards",),
    ("generation",),
    ("checkpoints",),
    ("algorithms",),
    ("training",),
    ("evaluation",),
    ("cli", "config"),
    ("launch", "evaluate", "convert", "make_experts", "real_models"),  # the entry points
)


def package_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def modules(root: str) -> dict[str, str]:
    """{dotted module name: file path} of every .py file under the package directory `root`."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(root))[:-3].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(dirpath, f)
    return out


def module_edges(mods: dict[str, str]) -> dict[str, set[str]]:
    """{module: the package modules it imports}, wherever the import statement is."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import a.b.c` names module a.b.c; a name in a module is its module
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith(PACKAGE):
                    edges[name].add(t)
    return edges


def layer_of(module: str) -> str:
    """The layer a module belongs to: its subpackage, or its own name for a module at the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def rank() -> dict[str, int]:
    return {layer: i for i, row in enumerate(LAYERS) for layer in row}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def problems(edges: dict[str, set[str]]) -> list[str]:
    """Every edge into a layer not below its source's (or into no declared layer), and every cycle."""
    ranks, out = rank(), []
    for src in sorted(edges):
        a = layer_of(src)
        if a not in ranks and a != PACKAGE:
            out.append(f"{src}: layer {a!r} is not in LAYERS")
            continue
        for dst in sorted(edges[src]):
            b = layer_of(dst)
            if a == b or a == PACKAGE:
                continue
            if b not in ranks:
                out.append(f"{src} -> {dst}: layer {b!r} is not in LAYERS")
            elif ranks[b] >= ranks[a]:
                out.append(f"{src} -> {dst}: {a} imports {b}, which is not below it")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", action="store_true", help="also list module-to-module edges")
    ap.add_argument("--dot", default="", help="write the layer graph as Graphviz dot to this file")
    args = ap.parse_args(argv)
    edges = module_edges(modules(package_dir()))
    layer_edges: dict[str, set[str]] = {}
    for src, dsts in edges.items():
        for dst in dsts:
            if layer_of(src) != layer_of(dst):
                layer_edges.setdefault(layer_of(src), set()).add(layer_of(dst))
    ranks = rank()
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports inside the package")
    for row in reversed(LAYERS):
        for layer in row:
            below = sorted(layer_edges.get(layer, ()), key=lambda x: -ranks.get(x, -1))
            print(f"  {layer:13s} -> {', '.join(below) if below else '(nothing in the package)'}")
    if args.modules:
        for src in sorted(edges):
            for dst in sorted(edges[src]):
                print(f"    {src} -> {dst}")
    if args.dot:
        with open(args.dot, "w") as f:
            f.write("digraph layers {\n  rankdir=TB;\n")
            for src, dsts in sorted(layer_edges.items()):
                for dst in sorted(dsts):
                    f.write(f'  "{src}" -> "{dst}";\n')
            f.write("}\n")
    bad = problems(edges)
    for line in bad:
        print("PROBLEM", line)
    print(f"layers: {'ok, every import points down' if not bad else f'{len(bad)} problems'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
