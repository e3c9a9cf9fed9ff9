"""A sensitive column as the groups fairness is measured over: its categories as they are, a
numeric one cut at the spec's thresholds, missing values as a group of their own."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from src.dataset.spec import ColumnSpec, DatasetSpec, group_edges_label

MISSING_GROUP = "missing"
# An attribute with more groups than this (forty countries) is reported as its largest groups
# and one "other" group: forty rows of mostly flagged groups tell a reader nothing.
MAX_GROUPS = 12


def group_labels(column: ColumnSpec, values: pd.Series) -> pd.Series:
    """Each row's group name (text)."""
    if column.kind == "numeric" and column.groups:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        edges = list(column.groups)
        names = np.array([group_edges_label(edges, i) for i in range(len(edges) + 1)], dtype=object)
        slots = np.searchsorted(np.asarray(edges), numbers, side="right")
        out = names[np.minimum(slots, len(edges))]
        out[np.isnan(numbers)] = MISSING_GROUP
        return pd.Series(out, index=values.index, name=values.name).astype(str)
    if column.kind == "boolean":
        numbers = pd.to_numeric(values, errors="coerce")
        text = numbers.map({1.0: "true", 0.0: "false"})
        return text.astype(object).fillna(MISSING_GROUP).astype(str).rename(values.name)
    return _merge_smallest(values.astype(object).fillna(MISSING_GROUP).astype(str))


def _merge_smallest(labels: pd.Series) -> pd.Series:
    counts = labels.value_counts()
    if len(counts) <= MAX_GROUPS:
        return labels
    kept = counts.sort_values(ascending=False, kind="stable").index[: MAX_GROUPS - 1]
    merged = len(counts) - len(kept)
    return labels.where(labels.isin(kept), f"other ({merged} groups)")


def groups_frame(
    spec: DatasetSpec, frame: pd.DataFrame, names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Group names for each of `names` (default: the attributes the fairness report measures)."""
    names = spec.fairness_attributes if names is None else names
    return pd.DataFrame(
        {name: group_labels(spec.column(name), frame[name]) for name in names}, index=frame.index
    )
