"""What a served request hands the prediction log: its rows as the body it came in, or, for a
batch, as columns (the encoded matrix the model saw, the fields the matrix lacks joined into one
string each), with the probabilities and the key its prediction ids are built from.

Shared by the service (which builds these on the request path, so building them must stay
cheap: no per-row Python object) and the writer process (which reads them back)."""

from __future__ import annotations

import math
import operator
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np

TEXT_SEPARATOR = "\x00"  # the contract refuses NUL in text fields: it cannot occur in a value


def epoch_hour(moment: datetime) -> int:
    """Whole hours since 1970-01-01 UTC: the statistics' hour (src.loop.statistics)."""
    return math.floor(moment.timestamp() / 3600)


@dataclass(frozen=True)
class ColumnLayout:
    """How the encoded matrix reads back as logged values: its numeric columns as they are, its
    categorical codes as their category (None where the code stands for a missing value)."""

    numeric: tuple[str, ...]
    nullable_numeric: tuple[str, ...]  # imputed in the matrix: the log keeps None instead
    # name, the matrix column it is in, the value of each code (the columns that read back)
    categorical: tuple[tuple[str, int, tuple[str | None, ...]], ...]

    @property
    def in_matrix(self) -> frozenset[str]:
        return frozenset((*self.numeric, *(name for name, _, _ in self.categorical)))


_EMPTY_FOR_NONE = {None: ""}.get


def _as_text(value: Any) -> str:
    """A value handed over as text: numbers as they print, booleans as 1 and 0 (stored in a
    number column)."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "1" if value else "0"
    return repr(value) if type(value) is float else str(value)


def _none_mask(values: tuple[Any, ...]) -> bytes:
    """One byte per value, 1 where it is None (a C loop: no Python code per value)."""
    return bytes(map(operator.is_, values, repeat(None)))


_LAYOUTS: weakref.WeakKeyDictionary[Any, ColumnLayout] = weakref.WeakKeyDictionary()


def _decodable(spec: Any) -> bool:
    """Can a categorical column be read back from its codes? Only when every allowed value has a
    code of its own: a value training never saw (NaN) or one outside the domain served as missing
    would read back as missing, and the log keeps what was sent."""
    codes = [c for v, c in spec.codes.items() if v is not None]
    return not spec.unknown_missing and all(c == c for c in codes) and len(set(codes)) == len(codes)


def column_layout(encoder: Any) -> ColumnLayout:
    """The layout of a CompiledEncoder's matrix, built once per encoder (per served model)."""
    layout = _LAYOUTS.get(encoder)
    if layout is None:
        categorical = []
        for j, spec in enumerate(encoder.categorical, start=len(encoder.numeric)):
            if not _decodable(spec):
                continue  # handed over as text, like the fields outside the matrix
            valid = {v: int(c) for v, c in spec.codes.items() if v is not None}
            values: list[str | None] = [None] * (max(valid.values(), default=-1) + 1)
            for value, code in valid.items():
                values[code] = str(value)
            categorical.append((spec.name, j, tuple(values)))
        layout = ColumnLayout(
            tuple(spec.name for spec in encoder.numeric),
            tuple(spec.name for spec in encoder.numeric if spec.nullable),
            tuple(categorical),
        )
        _LAYOUTS[encoder] = layout
    return layout


@dataclass(frozen=True)
class LoggedColumns:
    """A batch's rows as columns: what the request already holds, nothing built per row."""

    layout: ColumnLayout
    matrix: np.ndarray  # float64, one row per input row: the layout's numeric, then categorical
    texts: dict[str, bytes]  # fields outside the matrix that were sent, values joined by NUL
    missing: dict[str, bytes]  # fields with None among their values: one 0/1 byte per row

    @property
    def nbytes(self) -> int:
        extra = sum(map(len, self.texts.values())) + sum(map(len, self.missing.values()))
        return self.matrix.nbytes + extra


@dataclass(frozen=True)
class Served:
    """What /predict answered: its rows (the request body as received, the JSON list of rows;
    or, for batches, `columns`), the probabilities in bytes, and the key its prediction ids are
    built from."""

    body: bytes
    probabilities: bytes
    model_version: str
    threshold: float
    request_key: str
    columns: LoggedColumns | None = field(default=None)

    @property
    def rows(self) -> int:
        return len(self.probabilities) // 8

    @property
    def size(self) -> int:
        """Bytes this request holds while it waits to be written."""
        held = self.columns.nbytes if self.columns is not None else 0
        return len(self.body) + len(self.probabilities) + held + 200

    @classmethod
    def of(
        cls,
        body: bytes,
        probabilities: np.ndarray,
        model_version: str,
        threshold: float,
        request_key: str,
    ) -> Served:
        return cls(
            body, probabilities.astype(np.float64).tobytes(), model_version, threshold, request_key
        )

    @classmethod
    def of_columns(
        cls,
        layout: ColumnLayout,
        matrix: np.ndarray,
        columns: dict[str, tuple[Any, ...]],
        probabilities: np.ndarray,
        model_version: str,
        threshold: float,
        request_key: str,
    ) -> Served:
        """A batch by its columns: the matrix as encoded (no copy), the fields the matrix lacks
        joined into one string each (C loops, no per-row object), None masks only where a
        column has None."""
        texts, missing = {}, {}
        for name, values in columns.items():
            if name in layout.in_matrix:
                if name in layout.nullable_numeric and None in values:
                    missing[name] = _none_mask(values)
                continue
            try:  # str.join refuses None (or a number) at once: cheaper than looking first
                joined = TEXT_SEPARATOR.join(values)
            except TypeError:
                if None in values:
                    missing[name] = _none_mask(values)
                # None reads "" here; the mask says it was None. (map and dict.get: C loops.)
                joined = TEXT_SEPARATOR.join(map(_as_text, map(_EMPTY_FOR_NONE, values, values)))
            texts[name] = joined.encode()
        logged = LoggedColumns(layout, matrix, texts, missing)
        return cls(
            b"",
            probabilities.astype(np.float64).tobytes(),
            model_version,
            threshold,
            request_key,
            logged,
        )
