"""The project's own Adult census files, built from the raw UCI Adult files, deterministically.

Outputs, in the challenge's published formats (data/README.md says the scenario of each):
adult_synth.csv (12,000 rows of adult.data), adult_ref_sample.csv and adult_shifted_sample.csv
(500 rows each of adult.test, the second with planted shifts), metrics_history.jsonl (200 hourly
points: seven healthy days, then a degradation) and drift_latest.json (the drift of the samples).
The CLI is src/make_data.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.dataset.shifts import ReplaySource
from src.dataset.spec import adult_spec
from src.errors import DataError
from src.fileio import dumps_json

# Column order of the headerless UCI files (fnlwgt is a sampling weight, not a feature); the
# project's files keep the spec's columns, then its label.
UCI_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
RAW_TARGET = "income"
POSITIVE_LABEL, NEGATIVE_LABEL = ">50K", "<=50K"

SEED = 2024
SYNTH_ROWS = 12_000
SAMPLE_ROWS = 500

# Planted shifts in adult_shifted_sample.csv (documented in data/README.md).
AGE_SHIFT_YEARS = 6
HOURS_SHIFT_SHARE = 0.5
HOURS_SHIFT = 10
PRIVATE_TO_SELF_EMPLOYED_SHARE = 0.3
PLANTED_SHIFTS = ("age", "hours_per_week", "workclass")

# metrics_history.jsonl scenario.
HISTORY_START = datetime(2026, 3, 2, tzinfo=UTC)
HISTORY_POINTS = 200
HEALTHY_POINTS = 168  # seven days of hourly points
HEALTHY = {
    "roc_auc": 0.915,
    "pr_auc": 0.79,
    "acc": 0.87,
    "latency_p95_ms": 180.0,
    "error_rate": 0.002,
}
NOISE = {
    "roc_auc": 0.002,
    "pr_auc": 0.004,
    "acc": 0.003,
    "latency_p95_ms": 15.0,
    "error_rate": 0.0005,
}
# Relative change reached at the last point, approached linearly over the degradation.
DEGRADED_BY = {
    "roc_auc": -0.042,
    "pr_auc": -0.036,
    "acc": -0.012,
    "latency_p95_ms": 0.25,
    "error_rate": 1.0,
}

OUTPUTS = (
    "adult_synth.csv",
    "adult_ref_sample.csv",
    "adult_shifted_sample.csv",
    "metrics_history.jsonl",
    "drift_latest.json",
)


def read_uci(path: Path) -> pd.DataFrame:
    """One raw UCI file (no header, ', ' separated, '?' missing) in the project's column layout."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (the raw UCI files live in data/raw/)")
    raw = pd.read_csv(
        path,
        header=None,
        names=list(UCI_COLUMNS),
        sep=",",
        skipinitialspace=True,
        na_values=["?"],
        keep_default_na=False,
        comment="|",  # adult.test opens with a "|1x3 Cross validator" line
    )
    label = raw[RAW_TARGET].str.rstrip(".")
    if not label.isin([NEGATIVE_LABEL, POSITIVE_LABEL]).all():
        raise DataError(f"{path}: labels other than {NEGATIVE_LABEL} / {POSITIVE_LABEL}")
    spec = adult_spec()
    raw[spec.label.column] = (label == POSITIVE_LABEL).astype(int)
    return raw[[*spec.features, spec.label.column]].reset_index(drop=True)


def draw_rows(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n rows without replacement, kept in file order."""
    picked = np.sort(rng.choice(len(frame), size=n, replace=False))
    return frame.iloc[picked].reset_index(drop=True)


def plant_shifts(sample: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """An older population working longer hours, with more self-employment."""
    shifted = sample.copy()
    shifted["age"] = np.minimum(shifted["age"] + AGE_SHIFT_YEARS, 90)
    longer = rng.random(len(shifted)) < HOURS_SHIFT_SHARE
    shifted.loc[longer, "hours_per_week"] = np.minimum(
        shifted.loc[longer, "hours_per_week"] + HOURS_SHIFT, 99
    )
    private = (shifted["workclass"] == "Private").to_numpy()
    moved = private & (rng.random(len(shifted)) < PRIVATE_TO_SELF_EMPLOYED_SHARE)
    shifted.loc[moved, "workclass"] = "Self-emp-not-inc"
    return shifted


def moved_income_line(sample: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """The concept change: the income line moved. Husbands without a degree (education_num
    under 13) no longer earn over 50K; people living alone or as a single parent who work 45
    hours or more now do. The old model scores these the other way round (measured: its ROC-AUC
    on shifted rows falls from 0.91 to 0.61), and a model can learn the new line from the inputs
    (0.99 for one trained on 10,000 shifted rows)."""
    labels = labels.copy()
    husband = (sample["relationship"] == "Husband").to_numpy()
    labels[husband & (sample["education_num"] < 13).to_numpy()] = 0
    single = sample["relationship"].isin(["Not-in-family", "Unmarried", "Own-child"]).to_numpy()
    labels[single & (sample["hours_per_week"] >= 45).to_numpy()] = 1
    return labels


def census_source(raw_test: Path) -> ReplaySource:
    """The census's replay: rows of a raw UCI file, drawn at random; the last hours an older
    population (plant_shifts) whose income line moved (moved_income_line)."""
    frame = read_uci(raw_test)
    spec = adult_spec()
    numeric = {n for n in spec.features if spec.column(n).kind == "numeric"}

    def shift(
        sample: pd.DataFrame, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[pd.DataFrame, np.ndarray]:
        shifted = plant_shifts(sample, rng)
        return shifted, moved_income_line(shifted, labels)

    def requests(sample: pd.DataFrame) -> list[dict[str, Any]]:
        return [
            {k: None if pd.isna(v) else int(v) if k in numeric else v for k, v in record.items()}
            for record in sample.to_dict(orient="records")
        ]

    return ReplaySource(
        frame[list(spec.features)],
        frame[spec.label.column].to_numpy(),
        shift,
        "an older population, longer hours, more self-employment; the income line moved",
        requests,
    )


def build_metrics_history(rng: np.random.Generator) -> list[dict[str, object]]:
    """Hourly points: HEALTHY_POINTS healthy hours, then a linear slide to DEGRADED_BY."""
    points = []
    degrading = HISTORY_POINTS - HEALTHY_POINTS
    for i in range(HISTORY_POINTS):
        progress = max(0, i - HEALTHY_POINTS + 1) / degrading
        point: dict[str, object] = {"ts": (HISTORY_START + timedelta(hours=i)).isoformat()}
        for name, level in HEALTHY.items():
            value = level * (1 + DEGRADED_BY[name] * progress) + rng.normal(0, NOISE[name])
            point[name] = round(max(value, 0.0), 0 if name == "latency_p95_ms" else 4)
        point["latency_p95_ms"] = int(point["latency_p95_ms"])
        points.append(point)
    return points


def _csv(frame: pd.DataFrame) -> str:
    out = frame.copy()
    spec = adult_spec()
    for name in spec.features:
        if spec.column(name).kind == "numeric":
            out[name] = out[name].astype("int64")
    return out.to_csv(index=False, lineterminator="\n")


def build_all(raw_dir: Path) -> dict[str, str]:
    """Every output file's text, keyed by file name; pure apart from reading the raw files."""
    train = read_uci(raw_dir / "adult.data")
    test = read_uci(raw_dir / "adult.test")
    rng = np.random.default_rng(SEED)
    synth = draw_rows(train, SYNTH_ROWS, rng)
    both = draw_rows(test, 2 * SAMPLE_ROWS, rng)
    order = rng.permutation(2 * SAMPLE_ROWS)
    ref = both.iloc[np.sort(order[:SAMPLE_ROWS])].reset_index(drop=True)
    shifted = plant_shifts(both.iloc[np.sort(order[SAMPLE_ROWS:])].reset_index(drop=True), rng)
    history = build_metrics_history(rng)

    from src.monitoring.drift import compute_drift

    spec = adult_spec()
    target = spec.label.column
    drift = compute_drift(spec, ref.drop(columns=target), shifted.drop(columns=target)).to_dict()
    drift["inputs"] = {"ref": "adult_ref_sample.csv", "new": "adult_shifted_sample.csv"}
    return {
        "adult_synth.csv": _csv(synth),
        "adult_ref_sample.csv": _csv(ref),
        "adult_shifted_sample.csv": _csv(shifted),
        "metrics_history.jsonl": "".join(json.dumps(p) + "\n" for p in history),
        "drift_latest.json": dumps_json(drift),
    }
