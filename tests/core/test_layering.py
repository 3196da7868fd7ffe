"""The import graph of ``src/sknet`` is layered and acyclic (issue 16).

Layers, lowest first; a module imports only its own layer's package or lower layers:

0. base: ``errors``, ``_limits``, ``_files``, ``_json``, ``_typecheck``, ``_device``, ``preprocess``
1. ``layers``
2. ``models``; then ``complexity`` and ``deploy`` (functions of a model)
3. weights I/O (``hub``) and ``data`` (neither imports the other); then the compatibility
   modules ``loading``, ``weights``, ``convert``, ``convert_caffe`` (re-exports of ``hub`` for
   code written against sknet 0.1; sknet itself does not import them)
   ``dense`` (detectors and segmenters over the backbones: models, data and weights I/O)
4. ``train``, ``predict``, ``export``, ``benchmark``; then ``analysis`` (the ablations train)
5. ``cli`` (through the public API: it may import the ``sknet`` package itself)

Packages of one layer do not import each other; the base modules may.

Imports of sknet's own modules inside functions are allowed only in ``cli`` and in the listed
places, lazy for ``import sknet``'s start-up time (``sknet.data`` brings torchvision: +1.2-1.8 s
measured); anywhere else they would hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

LAYERS: dict[str, float] = {
    "errors": 0, "_limits": 0, "_files": 0, "_json": 0, "_typecheck": 0, "_device": 0,
    "preprocess": 0,
    "layers": 1,
    "models": 2, "complexity": 2.5, "deploy": 2.5,
    "hub": 3, "data": 3,
    "loading": 3.5, "weights": 3.5, "convert": 3.5, "convert_caffe": 3.5,
    "dense": 3.7,
    "train": 4, "predict": 4, "export": 4, "benchmark": 4, "analysis": 4.5,
    "cli": 5,
}  # fmt: skip


#: (importer, imported): lazy so that ``import sknet`` (which imports predict) stays fast.
LAZY_FOR_START_UP = {
    ("sknet.predict.inputs", "sknet.data"),
    ("sknet.predict.explain", "sknet.data"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in (SRC / "sknet").rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def _edges(mods: dict[str, Path]) -> list[tuple[str, str, bool, int]]:
    """(importer, imported sknet module, inside a function?, line) for every import."""
    out = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), str(path))
        nested: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nested.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    mod = node.module or ""
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names
                ]
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != name and t.startswith("sknet"):
                    out.append((name, t, id(node) in nested, node.lineno))
    return out


def _layer(module: str) -> float | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in _modules() if m != "sknet" and _layer(m) is None)
    assert not unplaced, f"modules outside the layer map: {unplaced}"


def test_no_import_runs_up_a_layer() -> None:
    bad = []
    for src, dst, _, line in _edges(_modules()):
        if dst == "sknet":
            if _layer(src) != LAYERS["cli"]:
                bad.append(f"{src}:{line} imports the sknet package")
            continue
        ls, ld = _layer(src), _layer(dst)
        if ls is None or ld is None:
            continue
        same_package = src.split(".")[1] == dst.split(".")[1]
        if ld > ls or (ld == ls and not same_package and ls != 0):
            bad.append(f"{src}:{line} -> {dst} (layer {ls} -> {ld})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_sknet_itself_does_not_use_the_compatibility_modules() -> None:
    compat = {"sknet.loading", "sknet.weights", "sknet.convert", "sknet.convert_caffe"}
    users = sorted({f"{src}:{line}" for src, dst, _, line in _edges(_modules()) if dst in compat})
    assert not users, f"sknet modules importing the compatibility re-exports: {users}"


def test_no_import_circle() -> None:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in _edges(mods):
        graph.setdefault(src, set()).add(dst)
        # importing sknet.a.b runs sknet/a/__init__.py first: a circle through it is real
        parent = dst.rsplit(".", 1)[0]
        while parent != "sknet" and parent in mods and not src.startswith(parent + "."):
            graph[src].add(parent)
            parent = parent.rsplit(".", 1)[0]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_sknet_modules_are_imported_at_the_top_except_in_the_cli() -> None:
    lazy = [
        f"{src}:{line} -> {dst}"
        for src, dst, nested, line in _edges(_modules())
        if nested and _layer(src) != LAYERS["cli"] and (src, dst) not in LAZY_FOR_START_UP
    ]
    assert not lazy, "function-level imports of sknet modules:\n" + "\n".join(lazy)
