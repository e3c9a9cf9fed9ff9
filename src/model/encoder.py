"""JSON rows straight into the model's matrix: the fitted pipeline's `transform`, re-expressed as
dict lookups and numpy from the spec and encoding.json (no pandas, no scikit-learn per request).

Per request, pandas and scikit-learn cost ~100x the trees themselves (docs/performance.md). The
encoder checks what the contract (src/model/contract.py) would check, on whole columns where it
can, and hands anything it is not sure of to the contract: it may only accept what the contract
accepts (a property test holds it to that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from src.dataset.spec import ColumnSpec, DatasetSpec
from src.errors import ArtifactError
from src.model.contract import MAX_IGNORED_TEXT, parse_datetime

# Below this many rows, checking value by value beats numpy's per-call overhead.
ROW_WISE_BELOW = 8
_NUMBER_TYPES = frozenset({int, float})
_TEXT = frozenset({str, type(None)})
_SCALARS = frozenset({str, int, float, bool, type(None)})
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class _Numeric:
    name: str
    fill: float
    low: float
    high: float
    nullable: bool
    kind: str  # numeric, boolean or datetime (as days since 1970)


@dataclass(frozen=True)
class _Categorical:
    name: str
    codes: dict[Any, float]  # allowed value (and None when nullable) -> ordinal code
    unknown_missing: bool  # a value outside the domain is served as missing
    value_type: type  # str, or int for integer codes


@dataclass(frozen=True)
class _Ignored:
    name: str
    types: frozenset[type]  # what the contract accepts for it (None always)


def _days(value: str) -> float:
    return parse_datetime(value).timestamp() / SECONDS_PER_DAY


def _ignored(column: ColumnSpec) -> _Ignored:
    if column.sensitive and column.kind == "numeric":
        return _Ignored(column.name, frozenset({int, float, type(None)}))
    if column.sensitive and column.kind == "boolean":
        return _Ignored(column.name, frozenset({bool, type(None)}))
    if column.sensitive:
        return _Ignored(column.name, _TEXT)
    return _Ignored(column.name, _SCALARS)


def encoding_from_pipeline(pipeline: Any, spec: DatasetSpec) -> dict[str, Any]:
    """encoding.json's content, read from a fitted pipeline: each numeric input's fill value,
    each categorical input's categories in code order (a table may have none of either)."""
    try:
        fitted = {name: (step, columns) for name, step, columns in pipeline.transformers_}
        num_imputer, num_cols = fitted["num"]
        cat_steps, cat_cols = fitted["cat"]
        statistics = num_imputer.statistics_ if len(num_cols) else []
        categories = cat_steps.named_steps["encode"].categories_ if len(cat_cols) else []
        fill = (
            cat_steps.named_steps["impute"].fill_value if len(cat_cols) else spec.missing_category
        )
    except (AttributeError, KeyError, ValueError, TypeError):
        raise ArtifactError("feature_pipeline.pkl has an unexpected structure") from None
    return {
        "numeric": [
            {"name": n, "fill": float(f)} for n, f in zip(num_cols, statistics, strict=True)
        ],
        "categorical": [
            {"name": n, "categories": [str(v) for v in values]}
            for n, values in zip(cat_cols, categories, strict=True)
        ],
        "missing_category": fill,
    }


class CompiledEncoder:
    """The fitted ColumnTransformer's `transform` as lookups into a numpy matrix."""

    def __init__(self, spec: DatasetSpec, numeric: list[_Numeric], categorical: list[_Categorical]):
        self.spec = spec
        self.numeric = numeric
        self.categorical = categorical
        self._unknown_missing = tuple(c for c in categorical if c.unknown_missing)
        self.ignored = [_ignored(c) for c in spec.columns if not c.is_input]
        self.width = len(numeric) + len(categorical)
        self._required = frozenset(spec.model_inputs)
        self._allowed = frozenset(spec.accepted)
        self._layouts = [
            (names, _getter(names)) for names in (spec.accepted, spec.features, spec.model_inputs)
        ]

    @classmethod
    def from_spec(cls, spec: DatasetSpec, encoding: dict[str, Any]) -> CompiledEncoder:
        numeric_fill = {e["name"]: float(e["fill"]) for e in encoding["numeric"]}
        fitted = {e["name"]: e["categories"] for e in encoding["categorical"]}
        if [*numeric_fill, *fitted] != [*spec.numeric_inputs, *spec.categorical_inputs]:
            raise ArtifactError("encoding.json does not match the spec's model inputs")
        numeric = []
        for name in spec.numeric_inputs:
            column = spec.column(name)
            low = -math.inf if column.min is None else float(column.min)
            high = math.inf if column.max is None else float(column.max)
            numeric.append(
                _Numeric(name, numeric_fill[name], low, high, column.nullable, column.kind)
            )
        categorical = [
            _categorical(spec.column(n), fitted[n], encoding["missing_category"])
            for n in spec.categorical_inputs
        ]
        return cls(spec, numeric, categorical)

    def encode(self, rows: Any) -> np.ndarray | None:
        """The model matrix for rows the contract surely accepts; None if any row needs the full
        validator (which then either rejects the request or hands back rows that encode)."""
        return self.encode_keeping_columns(rows)[0]

    def encode_keeping_columns(
        self, rows: Any
    ) -> tuple[np.ndarray | None, dict[str, tuple[Any, ...]] | None]:
        """`encode`, and the raw columns the column-wise path built on the way (None for a few
        rows, encoded row by row): the prediction log hands them over instead of the body."""
        if type(rows) is not list or not rows:
            return None, None
        if len(rows) < ROW_WISE_BELOW:
            return self._encode_row_wise(rows), None
        columns = self._columns(rows)
        if columns is None:
            return None, None
        matrix = self._encode_columns(columns, len(rows))
        return matrix, None if matrix is None else columns

    def _columns(self, rows: list[Any]) -> dict[str, tuple[Any, ...]] | None:
        """Rows transposed to columns; None if a row is not an object or has a field too many
        or too few. The usual layouts (whole records, features, model inputs only) go through
        itemgetter and zip, keeping the per-row work in C."""
        for names, getter in self._layouts:
            try:
                values = list(map(getter, rows))
            except (KeyError, TypeError):  # a field missing, or a row that is not an object
                continue
            if any(type(row) is not dict for row in rows):
                return None
            if sum(map(len, rows)) == len(names) * len(rows):  # no row has fields beyond these
                return dict(zip(names, zip(*values, strict=True), strict=True))
            break
        # Mixed layouts (some optional fields absent in some rows): row by row.
        if not all(
            type(row) is dict and self._required <= row.keys() <= self._allowed for row in rows
        ):
            return None
        present = set().union(*(row.keys() for row in rows))
        return {
            name: tuple(row.get(name) for row in rows)
            for name in self.spec.accepted
            if name in present
        }

    def _ignored_ok(self, columns: dict[str, tuple[Any, ...]]) -> bool:
        """The fields the model does not read hold what the contract accepts for them."""
        for spec in self.ignored:
            values = columns.get(spec.name)
            if values is None:
                continue
            if not set(map(type, values)) <= spec.types:
                return False
            texts = [v for v in values if type(v) is str]
            if texts and (max(map(len, texts)) > MAX_IGNORED_TEXT or "\x00" in "".join(texts)):
                return False
            numbers = [v for v in values if type(v) is float]
            if numbers and not np.isfinite(np.array(numbers)).all():
                return False
        return True

    def _encode_columns(self, columns: dict[str, tuple[Any, ...]], n: int) -> np.ndarray | None:
        """Column-wise checks: `set(map(type, column))` for types, numpy for ranges, one dict
        lookup per categorical value, so per-value work stays in C."""
        if not self._ignored_ok(columns):
            return None
        out = np.empty((n, self.width))
        try:
            for j, spec in enumerate(self.numeric):
                column = _numeric_column(spec, columns[spec.name])
                if column is None:
                    return None
                out[:, j] = column
            for j, spec in enumerate(self.categorical, start=len(self.numeric)):
                column = _categorical_column(spec, columns[spec.name])
                if column is None:
                    return None
                out[:, j] = column
        except (KeyError, TypeError, OverflowError, ValueError):  # unknown or unhashable values
            return None
        return out

    def _encode_row_wise(self, rows: list[Any]) -> np.ndarray | None:
        """The same checks value by value: for a few rows, numpy's per-call cost dominates."""
        for row in rows:
            if type(row) is not dict:
                return None
            keys = row.keys()
            if not (keys >= self._required and keys <= self._allowed):
                return None
        present = set().union(*(row.keys() for row in rows))
        columns = {name: tuple(row.get(name) for row in rows) for name in present}
        if not self._ignored_ok(columns):
            return None
        out = []
        try:
            for row in rows:
                encoded = []
                for spec in self.numeric:
                    value = _numeric_value(spec, row[spec.name])
                    if value is None:
                        return None
                    encoded.append(value)
                for spec in self.categorical:
                    value = _category_value(spec, row[spec.name])
                    if value is None:
                        return None
                    encoded.append(value)
                out.append(encoded)
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        return np.array(out, dtype=np.float64)

    def unknown_counts(
        self, rows: list[dict[str, Any]], columns: dict[str, tuple[Any, ...]] | None = None
    ) -> dict[str, int]:
        """Values outside a domain that were served as missing (`unknown: missing`), per column
        that had any: from the columns the fast path built, else from the rows."""
        counts = {}
        for spec in self._unknown_missing:
            if columns is not None:
                values = columns.get(spec.name, ())
            else:
                values = tuple(row.get(spec.name) for row in rows)
            outside = sum(1 for v in values if v is not None and v not in spec.codes)
            if outside:
                counts[spec.name] = outside
        return counts


def _getter(names: tuple[str, ...]) -> Any:
    if len(names) == 1:  # itemgetter of one name gives the value, not a 1-tuple
        only = names[0]
        return lambda row: (row[only],)
    return itemgetter(*names)


def _categorical(column: ColumnSpec, fitted: list[str], missing_category: str) -> _Categorical:
    """Each allowed value's code: its place among the categories training saw; a domain value
    training never saw is unknown to the trees (NaN: LightGBM routes it as missing)."""
    position = {value: float(i) for i, value in enumerate(fitted)}
    value_type: type = int if column.integer_codes else str
    codes: dict[Any, float] = {
        value: position.get(str(value), math.nan) for value in column.categories or ()
    }
    if column.nullable:
        # The imputer turns null into the fill value; unseen in training it is unknown.
        codes[None] = position.get(missing_category, math.nan)
    return _Categorical(column.name, codes, column.unknown == "missing", value_type)


def _numeric_value(spec: _Numeric, value: Any) -> float | None:
    if value is None:
        return spec.fill if spec.nullable else None
    if spec.kind == "boolean":
        return float(value) if type(value) is bool else None
    if spec.kind == "datetime":
        return _days(value) if type(value) is str and len(value) <= 64 else None
    if type(value) not in _NUMBER_TYPES or not spec.low <= value <= spec.high:
        return None  # NaN fails the comparison too
    return value


def _numeric_column(spec: _Numeric, values: tuple[Any, ...]) -> np.ndarray | None:
    if spec.kind != "numeric":
        encoded = [_numeric_value(spec, v) for v in values]
        return None if None in encoded else np.array(encoded, dtype=np.float64)
    if spec.nullable and None in values:
        values = tuple(spec.fill if v is None else v for v in values)
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return None
    column = np.array(values, dtype=np.float64)
    # NaN fails both comparisons; ints beyond float range raise OverflowError.
    if not ((column >= spec.low) & (column <= spec.high)).all():
        return None
    return column


def _category_value(spec: _Categorical, value: Any) -> float | None:
    if value is None:
        return spec.codes[None]  # KeyError (the contract's call) unless nullable
    if type(value) is not spec.value_type:  # True == 1 and 1.0 == 1: neither is a code
        return None
    if spec.unknown_missing:
        if spec.value_type is str and (len(value) > MAX_IGNORED_TEXT or "\x00" in value):
            return None
        return spec.codes.get(value, math.nan)
    return spec.codes[value]


def _categorical_column(spec: _Categorical, values: tuple[Any, ...]) -> list[float] | None:
    if spec.unknown_missing or spec.value_type is int:
        encoded = [_category_value(spec, v) for v in values]
        return None if None in encoded else encoded
    codes = spec.codes
    return [codes[v] for v in values]
