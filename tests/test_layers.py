"""Layer rules of DESIGN.md / STYLE.md, checked on every module's imports
(module level and inside functions alike): the layer directions, no import
cycle between modules, no import of another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, wherever the import is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


MODULES = {
    _module_name(p): _imports(p)
    for pkg in ("dataflow", "runtime")
    for p in sorted((ROOT / pkg).rglob("*.py"))
}


def _hits(imports: set[str], target: str) -> list[str]:
    return sorted(n for n in imports if n == target or n.startswith(target + "."))


def test_modules_found():
    assert "dataflow.dataset" in MODULES and "runtime.refs" in MODULES


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("runtime")))
def test_runtime_never_imports_dataflow(module):
    assert _hits(MODULES[module], "dataflow") == []


@pytest.mark.parametrize(
    "module",
    sorted(m for m in MODULES if m.startswith("dataflow") and not m.startswith("dataflow.exec")),
)
def test_only_the_planner_imports_exec(module):
    if module == "dataflow.plan.planner":
        return
    assert _hits(MODULES[module], "dataflow.exec") == [], (
        f"{module} imports dataflow.exec; only dataflow/plan/planner.py may"
    )


BELOW_DATASET = (
    "dataflow.plan",
    "dataflow.exec",
    "dataflow.sources",
    "dataflow.iterators",
    "dataflow.block",
    "dataflow.expressions",
    "dataflow.service",
)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(BELOW_DATASET)))
def test_nothing_below_imports_the_dataset_facade(module):
    forbidden = _hits(MODULES[module], "dataflow.dataset") + _hits(
        MODULES[module], "dataflow.read_api"
    )
    assert forbidden == [], f"{module} imports {forbidden}: the facade sits above it"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    sample = ROOT / "dataflow" / "dataset_base.py"
    assert "dataflow.plan.planner" in _imports(sample)  # imported inside methods only


# -- cycles and private names ---------------------------------------------------------


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_imports(source: str, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """``(module, name)`` of every import that runs (at module level or inside a
    function); ``name`` is None for ``import module``. Imports under
    ``if TYPE_CHECKING:`` never run and are left out."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit_one(stmt)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.extend((base, a.name) for a in node.names)
        visit(node)

    visit(ast.parse(source))
    return found


def _graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports when it runs."""
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, (source, is_package) in sources.items():
        for base, name in _run_time_imports(source, module, is_package):
            target = f"{base}.{name}" if name and f"{base}.{name}" in sources else base
            if target in sources and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _private_imports(sources: dict[str, tuple[str, bool]]) -> set[tuple[str, str]]:
    """``(importer, "module._name")`` for each private name taken from another module."""
    found = set()
    for module, (source, is_package) in sources.items():
        for base, name in _run_time_imports(source, module, is_package):
            private = name and name.startswith("_") and not name.startswith("__")
            if private and base in sources and base != module and f"{base}.{name}" not in sources:
                found.add((module, f"{base}.{name}"))
    return found


SOURCES = {
    _module_name(p): (p.read_text(), p.name == "__init__.py")
    for pkg in ("dataflow", "runtime")
    for p in sorted((ROOT / pkg).rglob("*.py"))
}


def test_no_import_cycles():
    cycles = _cycles(_graph(SOURCES))
    assert cycles == [], (
        "modules that import each other (directly or round a loop, imports inside "
        f"functions included): {cycles}; move what both need into a module below them"
    )


def test_no_module_imports_another_modules_private_names():
    found = _private_imports(SOURCES)
    assert found == set(), (
        f"private names imported from another module: {sorted(found)}; make the name "
        "public where it is (it is then API of that module) or move it to its users"
    )


def test_the_cycle_checker_counts_imports_in_functions_not_type_checking():
    a = "import pkg.b\n"
    b_in_function = "def f():\n    from pkg import a\n"
    b_type_checking = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    pkg = ("", True)
    assert _cycles(_graph({"pkg": pkg, "pkg.a": (a, False), "pkg.b": (b_in_function, False)})) == [
        ["pkg.a", "pkg.b"]
    ]
    assert (
        _cycles(_graph({"pkg": pkg, "pkg.a": (a, False), "pkg.b": (b_type_checking, False)})) == []
    )
    private = {
        "pkg": pkg,
        "pkg.a": ("from pkg.b import _helper, public\n", False),
        "pkg.b": ("", False),
    }
    assert _private_imports(private) == {("pkg.a", "pkg.b._helper")}
