"""Drift at scale: 1,000,000 vs 1,000,000 rows, against a plain numpy/scipy PSI + KS, same run.

The plain version is the yardstick the issue names: quantile edges, searchsorted + bincount,
value_counts for categoricals, PSI with the same epsilon, scipy's ks_2samp. Ours adds point-mass
bins, rare-category pooling, chi-square and the noise bootstrap on top.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.common import census as load_dataset
from bench.common import median, table
from src.dataset.adult import plant_shifts, read_uci
from src.dataset.spec import adult_spec
from src.monitoring.drift import EPSILON, compute_drift

ROOT = Path(__file__).resolve().parent.parent
ROWS = 1_000_000


def make_files(folder: Path, rows: int) -> tuple[Path, Path]:
    """Two CSVs of `rows` rows resampled from adult.data; the second has the planted shifts."""
    raw = read_uci(ROOT / "data" / "raw" / "adult.data")
    rng = np.random.default_rng(7)
    ref = raw.iloc[rng.integers(0, len(raw), rows)].reset_index(drop=True)
    new = plant_shifts(raw.iloc[rng.integers(0, len(raw), rows)].reset_index(drop=True), rng)
    paths = folder / "ref.csv", folder / "new.csv"
    for frame, path in zip((ref, new), paths, strict=True):
        frame.to_csv(path, index=False)
    return paths


def plain_drift(ref: pd.DataFrame, new: pd.DataFrame, bins: int = 10) -> dict[str, float]:
    """A plain vectorised PSI (and KS for numerics) per feature."""
    out = {}
    spec = adult_spec()
    for column in (spec.column(name) for name in spec.features):
        a, b = ref[column.name], new[column.name]
        if column.kind == "numeric":
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            x, y = x[~np.isnan(x)], y[~np.isnan(y)]
            edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
            p = np.bincount(np.searchsorted(edges, x), minlength=len(edges) + 1) / len(x)
            q = np.bincount(np.searchsorted(edges, y), minlength=len(edges) + 1) / len(y)
            stats.ks_2samp(x, y)
        else:
            counts = pd.concat(
                [a.value_counts(normalize=True), b.value_counts(normalize=True)], axis=1
            ).fillna(0.0)
            p, q = counts.iloc[:, 0].to_numpy(), counts.iloc[:, 1].to_numpy()
        p, q = np.where(p == 0, EPSILON, p), np.where(q == 0, EPSILON, q)
        out[column.name] = float(np.sum((q - p) * np.log(q / p)))
    return out


def run(rows: int = ROWS, repeats: int = 3) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    ref_path, new_path = make_files(folder, rows)
    timings: dict[str, list[float]] = {
        "read both CSVs": [],
        "ours": [],
        "plain": [],
        "ours, pandas dtypes": [],
    }
    for _ in range(repeats):
        started = time.perf_counter()
        ref = load_dataset(ref_path, require_target=False).features
        new = load_dataset(new_path, require_target=False).features
        timings["read both CSVs"].append(time.perf_counter() - started)
        for name, fn in (
            ("ours", lambda a, b: compute_drift(adult_spec(), a, b)),
            ("plain", plain_drift),
        ):
            started = time.perf_counter()
            fn(ref, new)
            timings[name].append(time.perf_counter() - started)
        # As a DataFrame from a database or a bare read_csv arrives: pandas 3 string columns.
        as_read = [pd.read_csv(path)[ref.columns] for path in (ref_path, new_path)]
        started = time.perf_counter()
        compute_drift(adult_spec(), *as_read)
        timings["ours, pandas dtypes"].append(time.perf_counter() - started)
    cli = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "src.drift",
                "--ref",
                str(ref_path),
                "--new",
                str(new_path),
                "--out",
                str(folder / "report.json"),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        cli.append(time.perf_counter() - started)
    summary = {name: round(median(values), 3) for name, values in timings.items()}
    summary["cli end to end"] = round(median(cli), 3)
    ratio = round(summary["ours"] / summary["plain"], 2)
    pandas_ratio = round(summary["ours, pandas dtypes"] / summary["plain"], 2)
    end_to_end = round(summary["read both CSVs"] + summary["ours"], 3)
    markdown = table(
        [
            "rows (each side)",
            "read both CSVs s",
            "drift compute s",
            "plain numpy/scipy s",
            "ours / plain",
            "read + compute s",
            "CLI wall s (incl. start-up)",
            "compute on pandas string columns s (/ plain)",
        ],
        [
            [
                f"{rows:,}",
                summary["read both CSVs"],
                summary["ours"],
                summary["plain"],
                ratio,
                end_to_end,
                summary["cli end to end"],
                f"{summary['ours, pandas dtypes']} ({pandas_ratio})",
            ]
        ],
    )
    return {
        "rows": rows,
        "timings": timings,
        "summary": summary,
        "ratio_vs_plain": ratio,
        "goals": {
            "read + compute < 5 s": end_to_end < 5,
            "compute within 1.5x of plain": ratio <= 1.5,
            "compute on pandas string columns within 1.5x of plain": pandas_ratio <= 1.5,
        },
        "markdown": markdown,
    }
