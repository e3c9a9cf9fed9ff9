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
    categorical: tuple[tuple[str, tuple[str | None, ...]], ...]  # name, value of each code

    @property
    def in_matrix(self) -> frozenset[str]:
        return frozenset((*self.numeric, *(name for name, _ in self.categorical)))


_EMPTY_FOR_NONE = {None: ""}.get


def _none_mask(values: tuple[Any, ...]) -> bytes:
    """One byte per value, 1 where it is None (a C loop: no Python code per value)."""
    return bytes(map(operator.is_, values, repeat(None)))


_LAYOUTS: weakref.WeakKeyDictionary[Any, ColumnLayout] = weakref.WeakKeyDictionary()


def column_layout(encoder: Any) -> ColumnLayout:
    """The layout of a CompiledEncoder's matrix, built once per encoder (per served model)."""
    layout = _LAYOUTS.get(encoder)
    if layout is None:
        categorical = []
        for spec in encoder.categorical:
            valid = {v: int(c) for v, c in spec.codes.items() if v is not None and c == c}
            values: list[str | None] = [None] * (max(valid.values(), default=-1) + 1)
            for value, code in valid.items():
                values[code] = value
            categorical.append((spec.name, tuple(values)))
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
            try:  # str.join refuses None at once: cheaper than looking for it first
                joined = TEXT_SEPARATOR.join(values)
            except TypeError:
                missing[name] = _none_mask(values)
                # None reads "" here; the mask says it was None. (map and dict.get: C loops.)
                joined = TEXT_SEPARATOR.join(map(_EMPTY_FOR_NONE, values, values))
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
