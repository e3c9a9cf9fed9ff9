"""Serving-time prediction: the fitted pipeline compiled to dict lookups, the trees to native code.

`feature_pipeline.pkl` + `model.pkl` stay the source of truth. Per request, pandas and
scikit-learn cost ~100x the trees themselves (docs/performance.md), so the service reads the fitted
pipeline's learned categories and imputation values once, encodes JSON rows straight into a
numpy matrix, and feeds it to the trees compiled by lleaves. Startup checks the result against
probabilities recorded at training time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

import numpy as np
import pandas as pd

from src.artifacts import ModelBundle
from src.contract import MAX_IGNORED_TEXT, InputContract
from src.errors import ArtifactError
from src.schema import COLUMN_BY_NAME, FEATURES, MISSING_CATEGORY, MODEL_INPUTS, SENSITIVE

logger = logging.getLogger("service")
# Probabilities must match the pickled pipeline + model to this (the bar).
MAX_ENGINE_DIFFERENCE = 1e-9
# Below this many rows LightGBM's own predictor is faster on one thread (thread start-up).
BOOSTER_THREADS_FROM = 200
# Below this many rows, checking value by value beats numpy's per-call overhead.
ROW_WISE_BELOW = 8
_NUMBER_TYPES = frozenset({int, float})
_TEXT_TYPES = frozenset({str, type(None)})


@dataclass(frozen=True)
class _Numeric:
    name: str
    fill: float
    low: float
    high: float
    nullable: bool


@dataclass(frozen=True)
class _Categorical:
    name: str
    codes: dict[Any, float]  # allowed value (and None when nullable) -> ordinal code


class CompiledEncoder:
    """The fitted ColumnTransformer's `transform`, re-expressed as lookups into a numpy matrix."""

    def __init__(self, numeric: list[_Numeric], categorical: list[_Categorical]) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.width = len(numeric) + len(categorical)
        self._required = frozenset(MODEL_INPUTS)
        self._allowed = frozenset(FEATURES)
        self._layouts = [(names, itemgetter(*names)) for names in (FEATURES, MODEL_INPUTS)]

    @classmethod
    def from_pipeline(cls, pipeline: Any, contract: InputContract) -> CompiledEncoder:
        try:
            (num_name, num_imputer, num_cols), (cat_name, cat_steps, cat_cols) = [
                t for t in pipeline.transformers_ if t[0] != "remainder"
            ]
            statistics = num_imputer.statistics_
            categories = cat_steps.named_steps["encode"].categories_
            fill_value = cat_steps.named_steps["impute"].fill_value
        except (AttributeError, KeyError, ValueError, TypeError):
            raise ArtifactError("feature_pipeline.pkl has an unexpected structure") from None
        if (num_name, cat_name) != ("num", "cat") or [*num_cols, *cat_cols] != [
            *(c for c in MODEL_INPUTS if COLUMN_BY_NAME[c].kind == "numeric"),
            *(c for c in MODEL_INPUTS if COLUMN_BY_NAME[c].kind == "categorical"),
        ]:
            raise ArtifactError("feature_pipeline.pkl does not match the schema's model inputs")
        numeric = [
            _Numeric(
                name,
                float(fill),
                float(COLUMN_BY_NAME[name].minimum),
                float(COLUMN_BY_NAME[name].maximum),
                name in contract.nullable,
            )
            for name, fill in zip(num_cols, statistics, strict=True)
        ]
        categorical = []
        for name, values in zip(cat_cols, categories, strict=True):
            codes: dict[Any, float] = {
                str(v): float(i) for i, v in enumerate(values) if v in contract.categories[name]
            }
            if name in contract.nullable:
                # The imputer turns null into the fill value; unseen in training it is unknown.
                missing = [i for i, v in enumerate(values) if v == fill_value]
                codes[None] = float(missing[0]) if missing else math.nan
            categorical.append(_Categorical(name, codes))
        return cls(numeric, categorical)

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
        or too few. The usual layouts (whole records, model inputs only) go through itemgetter
        and zip, keeping the per-row work in C."""
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
        # Mixed layouts (some sensitive fields absent in some rows): row by row.
        if not all(
            type(row) is dict and self._required <= row.keys() <= self._allowed for row in rows
        ):
            return None
        return {name: tuple(row.get(name) for row in rows) for name in FEATURES}

    def _encode_columns(self, columns: dict[str, tuple[Any, ...]], n: int) -> np.ndarray | None:
        """Column-wise checks: `set(map(type, column))` for types, numpy for ranges, one dict
        lookup per categorical value, so per-value work stays in C."""
        for name in SENSITIVE:
            values = columns.get(name)
            if values is None:
                continue
            if not set(map(type, values)) <= _TEXT_TYPES:
                return None
            if None in values:
                values = tuple(v for v in values if v is not None)
            if values and (max(map(len, values)) > MAX_IGNORED_TEXT or "\x00" in "".join(values)):
                return None
        out = np.empty((n, self.width))
        try:
            for j, spec in enumerate(self.numeric):
                values = columns[spec.name]
                if spec.nullable and None in values:
                    values = tuple(spec.fill if v is None else v for v in values)
                if not set(map(type, values)) <= _NUMBER_TYPES:
                    return None
                column = np.array(values, dtype=np.float64)
                # NaN fails both comparisons; ints beyond float range raise OverflowError.
                if not ((column >= spec.low) & (column <= spec.high)).all():
                    return None
                out[:, j] = column
            for j, spec in enumerate(self.categorical, start=len(self.numeric)):
                codes = spec.codes
                out[:, j] = [codes[v] for v in columns[spec.name]]
        except (KeyError, TypeError, OverflowError):  # unknown or unhashable values
            return None
        return out

    def _encode_row_wise(self, rows: list[Any]) -> np.ndarray | None:
        """The same checks value by value: for a few rows, numpy's per-call cost dominates."""
        out = []
        try:
            for row in rows:
                if type(row) is not dict:
                    return None
                keys = row.keys()
                if not (keys >= self._required and keys <= self._allowed):
                    return None
                for name in SENSITIVE:
                    value = row.get(name)
                    if value is not None and (
                        type(value) is not str or len(value) > MAX_IGNORED_TEXT or "\x00" in value
                    ):
                        return None
                encoded = []
                for spec in self.numeric:
                    value = row[spec.name]
                    if value is None and spec.nullable:
                        value = spec.fill
                    if type(value) not in _NUMBER_TYPES or not spec.low <= value <= spec.high:
                        return None  # NaN fails the comparison too
                    encoded.append(value)
                encoded.extend(spec.codes[row[spec.name]] for spec in self.categorical)
                out.append(encoded)
        except (KeyError, TypeError):
            return None
        return np.array(out, dtype=np.float64)


class TreeBuilds(Protocol):
    """Where compiled trees are kept between processes (the registry's store)."""

    def read(self) -> bytes | None: ...

    def keep(self, object_code: bytes) -> None: ...


class Predictor:
    """Probabilities for encoded rows, from one of three engines that must agree to 1e-9."""

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        engine: str,
        max_rows: int | None = None,
        builds: TreeBuilds | None = None,
    ) -> None:
        self.bundle = bundle
        self.engine = engine
        self.contract = contract_from_bundle(bundle)
        self.encoder = CompiledEncoder.from_pipeline(bundle.pipeline, self.contract)
        self.adapter = self.contract.adapter(max_rows)
        self.threshold = float(bundle.manifest["decision_threshold"])
        self.version = bundle.version
        self._booster = bundle.model.booster_
        self._compiled = _lleaves(self._booster, builds) if engine == "lleaves" else None

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        if self._compiled is not None:
            rows = np.ascontiguousarray(matrix, dtype=np.float64)
            out = np.empty(len(rows))
            self._compiled[0](rows.ctypes.data, out.ctypes.data, 0, len(rows))
            return out
        threads = 1 if len(matrix) < BOOSTER_THREADS_FROM else 2
        return self._booster.predict(matrix, num_threads=threads)

    def pipeline_probabilities(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The reference path: a DataFrame through the pickled pipeline and model."""
        frame = pd.DataFrame(rows, columns=list(FEATURES))
        matrix = self.bundle.pipeline.transform(frame)
        threads = 1 if len(frame) < BOOSTER_THREADS_FROM else 2
        return self.bundle.model.predict_proba(matrix, num_threads=threads)[:, 1]

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Probabilities for rows the contract has accepted, through the configured engine."""
        if self.engine == "pipeline":
            return self.pipeline_probabilities(rows)
        matrix = self.encoder.encode(rows)
        if matrix is None:  # the contract accepted what the encoder did not: a bug, not bad input
            raise RuntimeError("validated rows failed to encode")
        return self.probabilities(matrix)

    def self_check(self) -> float:
        """Predict the rows recorded at training time; raise unless every probability matches."""
        sample = self.bundle.sample
        rows = self.adapter.validate_python(sample["rows"])
        got = self.predict_rows(rows)
        reference = self.pipeline_probabilities(rows)
        expected = np.asarray(sample["probabilities"])
        worst = float(max(np.abs(got - expected).max(), np.abs(reference - expected).max()))
        if not worst <= MAX_ENGINE_DIFFERENCE:
            raise ArtifactError(
                f"the {self.engine} engine disagrees with training-time probabilities "
                f"by {worst:.2e}"
            )
        return worst


def _lleaves(booster: Any, builds: TreeBuilds | None) -> tuple[Any, Any]:
    """The compiled trees: from `builds` when kept there (verified by its hash), else compiled
    now and kept for the next process."""
    from src.compiled import compiled_trees

    cached = builds.read() if builds is not None else None
    if cached is not None:
        try:
            entry, keep_alive, _ = compiled_trees(booster, cached)
            return entry, keep_alive
        except Exception as exc:  # an object LLVM cannot load: compile instead, as on a miss
            logger.warning("compiled trees unusable (%s); compiling", type(exc).__name__)
    entry, keep_alive, code = compiled_trees(booster)
    if builds is not None:
        try:
            builds.keep(code)
        except Exception as exc:  # a read-only store: serve anyway, compile again next time
            logger.warning("could not keep the compiled trees: %s", exc)
    return entry, keep_alive


def contract_from_bundle(bundle: ModelBundle) -> InputContract:
    """Allowed categories come from the fitted encoder; the imputer's fill value is not one."""
    cat_steps = bundle.pipeline.named_transformers_["cat"]
    names = [c for c in MODEL_INPUTS if COLUMN_BY_NAME[c].kind == "categorical"]
    categories = {
        name: tuple(str(v) for v in values if v != MISSING_CATEGORY)
        for name, values in zip(names, cat_steps.named_steps["encode"].categories_, strict=True)
    }
    return InputContract(categories=categories, nullable=frozenset(bundle.manifest["nullable"]))
