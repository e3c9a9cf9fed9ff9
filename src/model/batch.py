"""Scoring a whole table: every row checked by the same rules as /predict, whole columns at a
time (Arrow and numpy, a dictionary lookup per distinct category), the trees in parallel chunks.

A row the service would refuse is set aside with the service's own messages (the contract
validates those rows, and only those), never a crash; the rest are scored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from src.dataset.spec import ColumnSpec, DatasetSpec
from src.dataset.table import (
    ColumnCheck,
    boolean_column,
    combined,
    datetime_column,
    days_since_epoch,
    distinct_codes,
    numeric_column,
    request_value,
)
from src.model.contract import MAX_IGNORED_TEXT, InputContract, format_errors
from src.model.encoder import CompiledEncoder, _Categorical, _Numeric

CHUNK_ROWS = 100_000  # rows the trees score per call (and per progress line)


@dataclass(frozen=True)
class Encoded:
    """A table as the model's matrix, with the rows the service would refuse."""

    matrix: np.ndarray
    refused: np.ndarray  # bool per row


def _numeric(
    spec: _Numeric, column: ColumnSpec, array: pa.Array, tokens: frozenset[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(values, refused): parse as the reader does, then the contract's rules: the range, and
    null only where the spec allows it (then the training median, as the imputer does)."""
    checked = ColumnCheck(column, len(array))
    if spec.kind == "boolean":
        values = boolean_column(array, checked, tokens)
    elif spec.kind == "datetime":
        values = days_since_epoch(datetime_column(array, checked, tokens))
    else:
        values = numeric_column(array, checked, tokens, lenient=True)
    refused = checked.bad.copy()
    missing = np.isnan(values) & ~refused
    with np.errstate(invalid="ignore"):
        refused |= (values < spec.low) | (values > spec.high)
    if spec.nullable:
        values = np.where(missing, spec.fill, values)
    else:
        refused |= missing
    return values, refused


def _categorical(
    spec: _Categorical, column: ColumnSpec, array: pa.Array, tokens: frozenset[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(codes, refused), decided once per distinct value."""
    codes, distinct = distinct_codes(array)
    mapped, bad = [], []
    for value in distinct:
        raw = (
            None if value is None or str(value).strip() in tokens else request_value(column, value)
        )
        if raw is None:
            code = spec.codes.get(None)
        elif type(raw) is not spec.value_type:
            code = None
        elif spec.unknown_missing:
            code = spec.codes.get(raw, math.nan)
        else:
            code = spec.codes.get(raw)
        mapped.append(math.nan if code is None else code)
        bad.append(code is None)
    table = np.append(np.asarray(mapped, dtype=np.float64), np.nan)
    refused_table = np.append(np.asarray(bad, dtype=bool), not column.nullable)
    return table[codes], refused_table[codes]


def _ignored(column: ColumnSpec, array: pa.Array, tokens: frozenset[str]) -> np.ndarray:
    """Rows whose ignored field the contract would refuse: a sensitive number that is none, a
    text too long or holding NUL (judged once per distinct value)."""
    if column.sensitive and column.is_numeric:
        checked = ColumnCheck(column, len(array))
        if column.kind == "boolean":
            boolean_column(array, checked, tokens)
        else:
            numeric_column(array, checked, tokens, lenient=True)
        return checked.bad
    codes, distinct = distinct_codes(array)
    bad = [
        isinstance(v, str) and (len(v.strip()) > MAX_IGNORED_TEXT or "\x00" in v) for v in distinct
    ]
    return np.append(np.asarray(bad, dtype=bool), False)[codes]


def encode_table(encoder: CompiledEncoder, table: pa.Table) -> Encoded:
    """The model's matrix for every row, and which rows the contract would refuse."""
    spec: DatasetSpec = encoder.spec
    tokens = frozenset(spec.missing)
    n = table.num_rows
    matrix = np.empty((n, encoder.width))
    refused = np.zeros(n, dtype=bool)
    for j, numeric in enumerate(encoder.numeric):
        array = combined(table.column(numeric.name))
        matrix[:, j], bad = _numeric(numeric, spec.column(numeric.name), array, tokens)
        refused |= bad
    for j, categorical in enumerate(encoder.categorical, start=len(encoder.numeric)):
        array = combined(table.column(categorical.name))
        matrix[:, j], bad = _categorical(categorical, spec.column(categorical.name), array, tokens)
        refused |= bad
    for column in spec.columns:
        if not column.is_input and column.name in table.column_names:
            refused |= _ignored(column, combined(table.column(column.name)), tokens)
    return Encoded(matrix, refused)


def refusal_reasons(
    spec: DatasetSpec, adapter: Any, table: pa.Table, rows: np.ndarray
) -> Iterator[tuple[int, str]]:
    """(row, reason) for each refused row: the contract's own messages, as /predict gives them."""
    from pydantic import ValidationError

    tokens = frozenset(spec.missing)
    present = [c for c in spec.columns if c.name in table.column_names]
    for start in range(0, len(rows), 10_000):
        part = rows[start : start + 10_000]
        records = table.take(pa.array(part)).to_pylist()
        for row, record in zip(part.tolist(), records, strict=True):
            request = {}
            for column in present:
                value = record[column.name]
                blank = value is None or (isinstance(value, str) and value.strip() in tokens)
                request[column.name] = None if blank else request_value(column, value)
            try:
                adapter.validate_python([request])
            except ValidationError as exc:
                errors = format_errors(exc, spec, InputContract(spec).nullable)
                yield row, "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            else:  # cannot happen: the encoder refused what the contract accepts
                yield row, "refused by the encoder (please report: the contract accepts it)"


def score(
    probabilities: Callable[[np.ndarray], np.ndarray],
    matrix: np.ndarray,
    *,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The trees on every row, in chunks, `threads` at a time (the compiled trees release the
    GIL): the same function times the trees alone in the benchmark."""
    threads = threads or max(1, len(os.sched_getaffinity(0)))
    out = np.empty(len(matrix))
    starts = range(0, len(matrix), CHUNK_ROWS)

    def one(start: int) -> int:
        stop = min(start + CHUNK_ROWS, len(matrix))
        out[start:stop] = probabilities(matrix[start:stop])
        return stop

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for stop in pool.map(one, starts):
            if progress is not None:
                progress(stop)
    return out
