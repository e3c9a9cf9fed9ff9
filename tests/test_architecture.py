"""The layout's rules, read from the source: who may import whom, no cycles, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

SRC = ROOT / "src"
# Training code: the training package and the entry points that train.
TRAINING_ENTRIES = {"src.train", "src.mitigation_table"}
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The project modules `path` imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("src"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("src"))
    return found


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}
TRAINING = TRAINING_ENTRIES | {
    m for m in MODULES if m == "src.training" or m.startswith("src.training.")
}
GRAPH = {name: {m for m in _imports(path) if m in MODULES} for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for target in GRAPH[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _in(package: str) -> list[str]:
    return sorted(m for m in MODULES if m == package or m.startswith(package + "."))


def test_architecture_has_no_import_cycles() -> None:
    cycles = [m for m in MODULES if m in _reachable(m)]
    assert cycles == []


@pytest.mark.parametrize(
    "module", [*_in("src.service"), "src.model.predictor", "src.model.contract", "src.app"]
)
def test_architecture_serving_never_imports_training_code(module: str) -> None:
    assert _reachable(module) & TRAINING == set()


@pytest.mark.parametrize("module", [*_in("src.agent"), *_in("src.loop"), "src.drift"])
def test_architecture_agent_loop_and_drift_never_import_the_service(module: str) -> None:
    assert not any(m.startswith("src.service") or m == "src.app" for m in _reachable(module))


@pytest.mark.parametrize(
    "package", ["src.service", "src.service.routes", "src.loop", "src.agent", "src.registry"]
)
def test_architecture_each_package_says_what_it_owns(package: str) -> None:
    docstring = ast.get_docstring(ast.parse(MODULES[package].read_text()))
    assert docstring is not None
    assert len(docstring.splitlines()) >= 2


def test_architecture_functions_fit_on_a_screen() -> None:
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_architecture_only_the_dataset_package_names_the_census_columns() -> None:
    """Every dataset-specific name lives in a spec: outside src/dataset/ (the census's spec file
    and its builder) no source names an Adult column. Names no English sentence uses are found
    anywhere; the everyday words (age, sex, ...) where code would use them, as string literals
    or subscripts."""
    import re

    from src.dataset.spec import adult_spec

    spec = adult_spec()
    names = {*spec.features, spec.label.column, *(a.column for a in spec.label.also)}
    everyday = {n for n in names if "_" not in n}
    unusual = re.compile(r"\b(" + "|".join(sorted(names - everyday)) + r"|fnlwgt)\b")
    quoted = re.compile(r"""["'](""" + "|".join(sorted(everyday)) + r""")["']""")
    offending = []
    for path in sorted(SRC.rglob("*")):
        inside = path.relative_to(SRC).parts[0] == "dataset"
        if inside or path.suffix not in {".py", ".sh", ".html", ".js", ".sql", ".yaml", ".md"}:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if unusual.search(line) or quoted.search(line):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)
