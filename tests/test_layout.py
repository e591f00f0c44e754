"""The package's layout holds: imports point one way, and no module imports itself back through others.

Every ``import`` of bavos, at module level or inside a function, is an edge. Layers, from the bottom:
errors, version and progress; config; io; models; pipeline, training and evaluation (side by side: none imports
another); api; cli; the package itself (``bavos/__init__.py``, ``__main__``). A module may import its own
sub-package and anything in a lower layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bavos"
LAYERS = [
    {"errors", "version", "progress"},
    {"config"},
    {"io"},
    {"models"},
    {"pipeline", "training", "evaluation"},
    {"api", "view"},
    {"cli"},
    {"", "__main__"},
]
RANK = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group(module: str) -> str:
    """'' for the package itself, else the top-level module or sub-package under bavos."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def resolve(target: str) -> str:
    """A dotted bavos name to the module it is: ``bavos.cli.eval`` stays, ``bavos.config.SegmentConfig`` is
    ``bavos.config``."""
    parts = target.split(".")
    while parts:
        path = PACKAGE.parent.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    raise AssertionError(f"{target} is not a bavos module")


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            edges.update(resolve(t) for t in targets if t == "bavos" or t.startswith("bavos."))
        edges.discard(name)
    return graph


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert {"bavos.pipeline.segment", "bavos.models.backbone", "bavos.cli.segment", "bavos.io.video"} <= set(graph)
    assert "bavos.pipeline.cluster" in graph["bavos.pipeline.segment"]
    assert "bavos.cli.eval" in graph["bavos.cli"]  # `from bavos.cli import eval` is the module


def test_imports_point_down() -> None:
    wrong = []
    for module, edges in import_graph().items():
        for target in edges:
            g, h = group(module), group(target)
            if h != g and RANK[h] >= RANK[g]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_every_sub_package_says_what_it_holds_and_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc and len(doc) > 100, init
