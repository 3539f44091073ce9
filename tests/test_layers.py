"""Layer rules of DESIGN.md / STYLE.md, checked on every module's imports
(module level and inside functions alike)."""

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
