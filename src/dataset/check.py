"""Checking a table against its spec: every problem, with its line, column and value.

Told apart: a missing column, an extra column, a category outside the domain, a value out of
range, an unparseable number (and a value no boolean or date, an infinity, a label value that is
neither class). The same reader trains, scores and monitors: what check accepts, they accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.dataset.spec import DatasetSpec
from src.dataset.table import (
    Problem,
    combined,
    extra_columns,
    label_column,
    label_encoding,
    missing_columns,
    parse_table,
    read_arrow,
    table_columns,
)


@dataclass(frozen=True)
class CheckResult:
    rows: int
    problems: list[Problem]

    @property
    def faults(self) -> int:
        return sum(p.count for p in self.problems)


def check_table(path: str | Path, spec: DatasetSpec) -> CheckResult:
    """Every problem of the table at `path` against `spec` (the label is checked when present:
    a table to score has none)."""
    path = Path(path)
    names = table_columns(path)
    problems = [
        Problem("missing column", name, detail=f"column '{name}' is missing (the spec declares it)")
        for name in missing_columns(spec, names)
    ]
    problems += [
        Problem(
            "extra column",
            name,
            detail=f"column '{name}' is not in the spec (declare it, or drop it from the table)",
        )
        for name in extra_columns(spec, names)
    ]
    encoding = label_encoding(spec, names)
    dictionary = [c.name for c in spec.columns if c.kind in ("categorical", "boolean")]
    label = [encoding.column] if encoding else []
    table = read_arrow(path, names, [*spec.accepted, *label], dictionary=[*dictionary, *label])
    _, _, faults, _ = parse_table(table, spec)
    problems += faults
    if encoding is not None:
        _, fault, _ = label_column(
            combined(table.column(encoding.column)), encoding, frozenset(spec.missing)
        )
        problems += [fault] if fault is not None else []
    return CheckResult(table.num_rows, problems)
