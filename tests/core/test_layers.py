"""Issue 16 item 4: layers import only downward (core < schemas < transforms < the spec
model < sources / sinks < pipelines < runners, collector, ui; the order is written once,
:data:`core.LAYERS`), nothing layered imports the test tooling (infra/, bench/, tests/), and
the CLI package's modules import one way (no cycle). An import-graph check over the source
tree: every ``import`` statement, function-local ones included, except those under ``if
TYPE_CHECKING:`` (types only). No services."""

from __future__ import annotations

import ast
from pathlib import Path

from core import LAYERS

REPO = Path(__file__).resolve().parents[2]
TOOLING = ("infra", "bench", "tests")

#: upward imports still to remove, each with why it is still there; the test fails when one
#: of them is gone too (so the list only shrinks) or when a new one appears
KNOWN_UPWARD: set[tuple[str, str]] = set()


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (its longest listed prefix), None if unlayered."""
    best, index = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, index = len(name), i
    return index


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def runtime_imports(tree: ast.AST, module: str, is_package: bool):
    """``(line, imported module)`` of every import statement outside ``if TYPE_CHECKING:``;
    relative imports resolved against ``module``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` imports pkg.mod when it is a module
            yield node.lineno, target
            for a in node.names:
                sub = f"{target}.{a.name}"
                if (REPO / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    REPO / Path(*sub.split("."))
                ).is_dir():
                    yield node.lineno, sub
        stack.extend(ast.iter_child_nodes(node))


def source_files():
    for names in LAYERS:
        for top in {n.split(".")[0] for n in names}:
            yield from sorted((REPO / top).rglob("*.py"))


def import_edges() -> list[tuple[str, str, str]]:
    """``(importer module, imported module, where)`` for every run-time import between the
    project's modules."""
    edges = []
    for path in sorted(set(source_files())):
        module = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        for line, target in runtime_imports(tree, module, path.name == "__init__.py"):
            if target.split(".")[0] in {n.split(".")[0] for names in LAYERS for n in names} | set(TOOLING):
                edges.append((module, target, f"{path.relative_to(REPO)}:{line}"))
    return edges


def upward(edges) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for src, dst, where in edges:
        top = dst.split(".")[0]
        src_layer, dst_layer = layer_of(src), layer_of(dst)
        if top in TOOLING or (dst_layer is not None and src_layer is not None and dst_layer > src_layer):
            key = (src, top if top in TOOLING else _listed(dst))
            found.setdefault(key, []).append(f"{where} imports {dst}")
    return found


def _listed(module: str) -> str:
    """``module`` cut to its two first parts (``pipelines.graph``), the unit KNOWN_UPWARD names."""
    return ".".join(module.split(".")[:2])


def test_every_package_of_the_source_tree_is_in_a_layer():
    tops = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()} - set(TOOLING) - {"native"}
    layered = {n.split(".")[0] for names in LAYERS for n in names}
    assert tops - layered == set(), "a package with no place in core.LAYERS"


def test_layer_of_reads_the_longest_prefix():
    assert (
        layer_of("pipelines.spec") < layer_of("sinks.iceberg") < layer_of("pipelines.graph") < layer_of("runners.cli")
    )
    assert layer_of("pipelines.stages") == layer_of("pipelines.stages.global_stage") == layer_of("pipelines.graph")
    assert layer_of("core.errors") == 0 and layer_of("infra.kafka") is None


def test_no_upward_import():
    found = upward(import_edges())
    new = {k: v for k, v in found.items() if k not in KNOWN_UPWARD}
    assert new == {}, "imports that go up core.LAYERS (or into test tooling):\n" + "\n".join(
        f"  {w}" for ws in new.values() for w in ws
    )
    gone = KNOWN_UPWARD - set(found)
    assert gone == set(), f"remove from KNOWN_UPWARD, they are fixed: {sorted(gone)}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself: a function-local upward import is found, a TYPE_CHECKING one is not."""
    code = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipelines.spec import ScrubStep\n"
        "def f():\n    from runners.stats import STATS\n    from core.batch import RawBatch\n"
    )
    imports = [t for _, t in runtime_imports(ast.parse(code), "transforms.x", False)]
    edges = [("transforms.x", t, "x") for t in imports if t.split(".")[0] in ("runners", "core", "pipelines")]
    assert list(upward(edges)) == [("transforms.x", "runners.stats")]


def test_cli_modules_import_one_way():
    """``runners.cli``: no command module imports the package (``__init__``) and the modules'
    import graph has no cycle."""
    cli = REPO / "runners" / "cli"
    graph: dict[str, set[str]] = {}
    for path in cli.glob("*.py"):
        module = module_name(path)
        targets = {t for _, t in runtime_imports(ast.parse(path.read_text()), module, path.name == "__init__.py")}
        graph[module] = {t for t in targets if t.startswith("runners.cli.")}
        if path.name not in ("__init__.py", "__main__.py"):
            assert "runners.cli" not in targets, f"{path.name} imports runners.cli (the package imports it)"
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in graph.get(m, ()):
            visit(n, trail + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])
    assert len(graph) >= 8  # one module per command, and common / errors
