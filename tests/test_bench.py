"""`make bench` is not run by the test suite (its goals are timed), so its code can rot unseen:
a renamed helper once broke every section after the first at import. Every module imports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
