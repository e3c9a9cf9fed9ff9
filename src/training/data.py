"""The rows a training run uses: read by the spec, the holdout left out, split for validation."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from src.dataset.spec import DatasetSpec
from src.dataset.table import Dataset, load_dataset
from src.errors import DataError
from src.fileio import sha256_file
from src.training.holdout import describe, holdout_csv, in_holdout

Split = tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TrainingData:
    """Rows to train on, the spec that describes them, and where they came from: a file (`path`,
    `sha256`, `rows`), or for a retraining a file plus labelled traffic (with its time range)."""

    spec: DatasetSpec
    dataset: Dataset
    provenance: dict[str, Any]


def read_training_data(path: Path, spec: DatasetSpec) -> TrainingData:
    dataset = load_dataset(path, spec)
    for note in dataset.notes:
        log(f"note: {path}: {note}")
    provenance = {"path": str(path), "sha256": sha256_file(path), "rows": len(dataset.features)}
    return TrainingData(spec, dataset, provenance)


@dataclass(frozen=True)
class Carved:
    """The rows a run may use, and what it left out for the registry's holdout."""

    dataset: Dataset
    holdout: dict[str, Any]  # the rule, the rows excluded, their hash (the manifest records it)
    holdout_rows: bytes  # those rows as CSV: the registry adopts them from its first champion


def carve_holdout(spec: DatasetSpec, dataset: Dataset) -> Carved:
    """Leave out the holdout's rows (src/training/holdout.py): no training path ever sees them."""
    if dataset.target is None:
        raise DataError("the dataset has no label column to train on")
    mask = in_holdout(spec, dataset.features, dataset.target)
    if mask.all():
        raise DataError("every row falls in the holdout: too few rows to train on")
    kept = Dataset(
        features=dataset.features[~mask], target=dataset.target[~mask], notes=dataset.notes
    )
    rows = holdout_csv(spec, dataset.features[mask], dataset.target[mask])
    return Carved(kept, describe(spec, int(mask.sum()), int((~mask).sum()), rows), rows)


def split_dataset(dataset: Dataset, *, val_size: float, seed: int) -> Split:
    """Stratified train/validation split: (X_train, X_val, y_train, y_val)."""
    from sklearn.model_selection import train_test_split  # not at import: the drift CLI skips it

    if dataset.target is None:
        raise DataError("the dataset has no label column to split on")
    counts = dataset.target.value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise DataError("the label needs at least two rows of each class to split")
    x_train, x_val, y_train, y_val = train_test_split(
        dataset.features,
        dataset.target,
        test_size=val_size,
        random_state=seed,
        stratify=dataset.target,
    )
    return x_train, x_val, y_train, y_val
