"""Traffic to replay through the service, and the change planted in its last hours, for any table.

The demo loop needs traffic whose quality falls for a reason a new model can learn: a population
shift the drift report sees, and a concept change the labels carry. For the census the project
has its own story (src/dataset/adult.py: an older population, the income line moved). For any
other table it plants one from the spec and the rows alone:

- the population moves, on the model input least tied to the fairness groups (Cramer's V): a
  numeric one has each value replaced by the table's value at quantile (1 + q) / 2, where q is
  its own quantile (the upper half of the column, values the table holds, inside the spec's
  range); a categorical or boolean one has 40% of the rows take its rarest value (of those in at
  least 1% of rows);
- the concept changes: the labels flip where that input is past its line (above the table's
  75th percentile, or the rarest value), so the old model is wrong there and a model trained on
  the new traffic can see where.

The rows are the table's holdout (src/training/holdout.py): rows no model trained on. A table
with an event-time column is replayed in that order; without one, rows are drawn at random.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.dataset.spec import DatasetSpec
from src.dataset.table import load_dataset, request_rows

MOVED_SHARE = 0.4  # rows that take the rarest value, when the shifted input is categorical
LINE_QUANTILE = 0.75  # above it, in the shifted input, the labels flip
MIN_DISTINCT = 5  # a numeric input with fewer values is not shifted
MIN_SHARE = 0.01  # the value rows move to: the rarest one at least this common

Shift = Callable[[pd.DataFrame, np.ndarray, np.random.Generator], tuple[pd.DataFrame, np.ndarray]]


@dataclass(frozen=True)
class ReplaySource:
    """Rows to replay (the spec's features, as a table is read), their labels (0/1), the change
    planted in the last hours, and how a row goes to /predict."""

    features: pd.DataFrame
    labels: np.ndarray
    shift: Shift
    shift_text: str
    requests: Callable[[pd.DataFrame], list[dict[str, Any]]]
    ordered: bool = False  # rows in event-time order, taken in turn; else drawn at random

    def keep(self, mask: np.ndarray) -> ReplaySource:
        """The rows where mask holds (the ones the served model can answer)."""
        features = self.features[mask].reset_index(drop=True)
        return ReplaySource(
            features, self.labels[mask], self.shift, self.shift_text, self.requests, self.ordered
        )


@dataclass(frozen=True)
class PlantedShift:
    """One input moved and the labels flipped past a line in it."""

    column: str
    numeric: bool
    sorted_values: np.ndarray  # numeric: the table's values, sorted (missing left out)
    line: Any  # numeric: the value above which labels flip; else the value that flips them

    def __call__(
        self, sample: pd.DataFrame, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[pd.DataFrame, np.ndarray]:
        shifted = sample.copy()
        values = shifted[self.column]
        if self.numeric:
            moved = self._upper_half(values.to_numpy(np.float64))
            shifted[self.column] = moved
            past = moved > self.line  # NaN compares false: a missing value keeps its label
        else:
            take = rng.random(len(shifted)) < MOVED_SHARE
            shifted.loc[take, self.column] = self.line
            past = (shifted[self.column] == self.line).to_numpy()
        labels = labels.copy()
        labels[past] = 1 - labels[past]
        return shifted, labels

    def _upper_half(self, values: np.ndarray) -> np.ndarray:
        n = len(self.sorted_values)
        rank = np.searchsorted(self.sorted_values, values, side="right")  # q = rank / n
        target = np.ceil((n + rank) / 2).astype(np.int64) - 1  # quantile (1 + q) / 2
        moved = self.sorted_values[np.clip(target, 0, n - 1)]
        return np.where(np.isnan(values), np.nan, moved)

    def describe(self) -> str:
        if self.numeric:
            return (
                f"'{self.column}' moved to the upper half of its values; labels flipped where "
                f"it is above {self.line:g}"
            )
        return (
            f"{MOVED_SHARE:.0%} of rows took '{self.column}' = {self.line!s}; labels flipped "
            "where it holds that value"
        )


def plant_shift(spec: DatasetSpec, features: pd.DataFrame) -> PlantedShift:
    """The shift for this table, on the input least tied to the fairness groups (so learning
    the change is not itself a change in how groups are treated, which the gate would refuse):
    a numeric input with at least MIN_DISTINCT values moves up, a categorical or boolean one
    takes its rarest value."""
    candidates = []
    for order, name in enumerate(spec.model_inputs):
        column = spec.column(name)
        values = features[name]
        if column.kind == "numeric":
            if values.nunique(dropna=True) < MIN_DISTINCT:
                continue
            binned = pd.qcut(values.rank(method="first"), 4, labels=False)
        elif column.kind in ("categorical", "boolean"):
            if values.nunique(dropna=True) < 2:
                continue
            binned = values
        else:
            continue
        tie = max((_cramers_v(binned, g) for g in _groups(spec, features)), default=0.0)
        candidates.append((round(tie, 6), column.kind != "numeric", order, name))
    if not candidates:
        raise ValueError("no model input holds two values: nothing to shift")
    name = min(candidates)[3]
    if spec.column(name).kind == "numeric":
        values = np.sort(features[name].dropna().to_numpy(np.float64))
        line = float(np.quantile(values, LINE_QUANTILE, method="inverted_cdf"))
        return PlantedShift(name, True, values, line)
    counts = features[name].value_counts(dropna=True)
    common = counts[counts >= max(1, MIN_SHARE * len(features))]
    rarest = (common if len(common) else counts[counts > 0]).sort_values(kind="stable").index[0]
    return PlantedShift(name, False, np.empty(0), rarest)


def _groups(spec: DatasetSpec, features: pd.DataFrame) -> list[pd.Series]:
    from src.dataset.groups import group_labels

    return [group_labels(spec.column(n), features[n]) for n in spec.fairness_attributes]


def _cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramer's V of two columns' values (missing as a value): 0 independent, 1 one gives the
    other."""
    x = pd.factorize(a.astype(object), use_na_sentinel=False)[0]
    y = pd.factorize(b.astype(object), use_na_sentinel=False)[0]
    table = np.zeros((x.max() + 1, y.max() + 1))
    np.add.at(table, (x, y), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / len(x)
    chi2 = float(((table - expected) ** 2 / np.where(expected > 0, expected, 1)).sum())
    smaller = min(table.shape) - 1
    return float(np.sqrt(chi2 / (len(x) * smaller))) if smaller else 0.0


def table_source(path: Path, spec: DatasetSpec) -> ReplaySource:
    """A table's holdout rows, in event-time order when the spec names an event time."""
    from src.training.holdout import in_holdout

    data = load_dataset(path, spec)
    if data.target is None:  # load_dataset requires the label: never so
        raise ValueError(f"{path}: no label")
    holdout = in_holdout(spec, data.features, data.target)
    features = data.features[holdout].reset_index(drop=True)
    labels = data.target.to_numpy()[holdout].astype(np.int64)
    ordered = data.event_times is not None
    if ordered:
        times = pd.Series(data.event_times[holdout]).reset_index(drop=True)
        order = times.sort_values(kind="stable").index.to_numpy()  # missing times last
        features, labels = features.iloc[order].reset_index(drop=True), labels[order]
    planted = plant_shift(spec, data.features)
    return ReplaySource(
        features,
        labels,
        planted,
        planted.describe(),
        lambda frame: request_rows(spec, frame),
        ordered,
    )
