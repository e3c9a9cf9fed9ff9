"""The holdout no model trains on: rows chosen by their identity, the same in every file and run.

A row's identity is the sha256 of its contents (every feature the spec declares and the label,
in the spec's order, missing as empty), keyed by the dataset's name. A row belongs to the holdout
when that hash falls in the first `HOLDOUT_PERCENT` of its range. So every training path (the
train CLI with any seed, retraining on a file plus traffic, the mitigations) leaves out the same
rows without reading any state, a duplicated row always lands on the same side, and the
registry's holdout (carved once, from the first champion's data, and recorded with its hash)
holds only rows that every model trained under this rule has excluded. The gate checks a
challenger's manifest for the rule.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from src.dataset.spec import DatasetSpec

HOLDOUT_PERCENT = 20
LABEL_COLUMN = "label"  # the holdout file's label column (0/1), after the spec's features


def holdout_rule(spec: DatasetSpec) -> str:
    """Names the rule: a set trained under another rule (or none) did not exclude these rows."""
    return f"sha256('{spec.name} holdout v1' | row) mod 100 < {HOLDOUT_PERCENT}"


def _as_text(column: pd.Series, numeric: bool) -> list[str]:
    """One column as the text its identity is built from: numbers as the shortest repr of the
    float (39 and 39.0 are one value), categories stripped, missing as empty."""
    if numeric:
        values = pd.to_numeric(column, errors="coerce").astype("float64")
        return ["" if v != v else repr(v) for v in values.tolist()]
    return ["" if v is None or v != v else str(v).strip() for v in column.astype(object).tolist()]


def row_hashes(spec: DatasetSpec, features: pd.DataFrame, target: Any) -> list[bytes]:
    """Each row's identity: sha256 over its features and label."""
    key = f"{spec.name} holdout v1\x1f".encode()
    columns = [_as_text(features[name], spec.column(name).is_numeric) for name in spec.features]
    labels = [str(int(v)) for v in np.asarray(target).tolist()]
    return [
        hashlib.sha256(key + "\x1f".join(values).encode()).digest()
        for values in zip(*columns, labels, strict=True)
    ]


def in_holdout(spec: DatasetSpec, features: pd.DataFrame, target: Any) -> np.ndarray:
    """A boolean mask: which rows belong to the holdout."""
    hashes = row_hashes(spec, features, target)
    buckets = [int.from_bytes(digest[:8], "big") % 100 for digest in hashes]
    return np.asarray(buckets, dtype=np.int64) < HOLDOUT_PERCENT


def holdout_csv(spec: DatasetSpec, features: pd.DataFrame, target: Any) -> bytes:
    """The rows as the registry stores them: the spec's features, then the label as its positive
    and negative values (so the file reads back through the spec like any table)."""
    label = spec.label
    values = np.where(np.asarray(target) == 1, label.positives[0], label.negatives[0])
    frame = features[list(spec.features)].assign(**{label.column: values})
    return frame.to_csv(index=False, lineterminator="\n").encode()


def describe(spec: DatasetSpec, excluded: int, kept: int, csv: bytes) -> dict[str, Any]:
    """What a training run's manifest says about the holdout it left out."""
    return {
        "rule": holdout_rule(spec),
        "rows_excluded": excluded,
        "rows_kept": kept,
        "sha256": hashlib.sha256(csv).hexdigest(),
    }
