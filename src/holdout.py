"""The holdout no model trains on: rows chosen by their identity, the same in every file and run.

A row's identity is the sha256 of its contents (every feature and the label, in schema order,
missing as empty). A row belongs to the holdout when that hash, keyed by `HOLDOUT_RULE`, falls in
the first `HOLDOUT_PERCENT` of its range. So every training path (the train CLI with any seed,
retraining on a file plus traffic, the mitigations) leaves out the same rows without reading any
state, a duplicated row always lands on the same side, and the registry's holdout (carved once,
from the first champion's data, and recorded with its hash) holds only rows that every model
trained under this rule has excluded. The gate checks a challenger's manifest for the rule.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from src.schema import COLUMN_BY_NAME, FEATURES, TARGET

HOLDOUT_PERCENT = 20
# Names the rule: a set trained under another rule (or none) did not exclude these rows.
HOLDOUT_RULE = f"sha256('adult-income holdout v1' | row) mod 100 < {HOLDOUT_PERCENT}"
_KEY = b"adult-income holdout v1\x1f"


def _as_text(column: pd.Series) -> list[str]:
    """One column as the text its identity is built from: numbers as the shortest repr of the
    float (39 and 39.0 are one value), categories stripped, missing as empty."""
    if COLUMN_BY_NAME[str(column.name)].kind == "numeric":
        values = pd.to_numeric(column, errors="coerce").astype("float64")
        return ["" if v != v else repr(v) for v in values.tolist()]
    return ["" if v is None or v != v else str(v).strip() for v in column.astype(object).tolist()]


def row_hashes(features: pd.DataFrame, target: Any) -> list[bytes]:
    """Each row's identity: sha256 over its features and label."""
    columns = [_as_text(features[name]) for name in FEATURES]
    labels = [str(int(v)) for v in np.asarray(target).tolist()]
    return [
        hashlib.sha256(_KEY + "\x1f".join(values).encode()).digest()
        for values in zip(*columns, labels, strict=True)
    ]


def in_holdout(features: pd.DataFrame, target: Any) -> np.ndarray:
    """A boolean mask: which rows belong to the holdout."""
    buckets = [int.from_bytes(digest[:8], "big") % 100 for digest in row_hashes(features, target)]
    return np.asarray(buckets, dtype=np.int64) < HOLDOUT_PERCENT


def holdout_csv(features: pd.DataFrame, target: Any) -> bytes:
    """The rows as the registry stores them (features then label, schema order)."""
    frame = features[list(FEATURES)].assign(**{TARGET: np.asarray(target)})
    return frame.to_csv(index=False, lineterminator="\n").encode()


def describe(excluded: int, kept: int, csv: bytes) -> dict[str, Any]:
    """What a training run's manifest says about the holdout it left out."""
    return {
        "rule": HOLDOUT_RULE,
        "rows_excluded": excluded,
        "rows_kept": kept,
        "sha256": hashlib.sha256(csv).hexdigest(),
    }
