"""Feature drift between a reference and a new sample: PSI per feature, plus KS / chi-square.
The CLI is src/drift.py; the live loop counts its hourly rows into these bins (src/loop/).

Bins are fit on the reference, then the new sample is counted into them (fit-then-compare), so a
reference can be stored once and compared against many windows.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from src.choices import DEFAULT_BINS, DEFAULT_THRESHOLD
from src.dataset.spec import ColumnSpec, DatasetSpec
from src.errors import DataError
from src.fileio import dumps_json

# Floor for an empty bin's share, so log(0) never happens (the value Evidently uses).
EPSILON = 1e-4
NOISE_DRAWS = 200
NOISE_SEED = 0
# Below this many rows a PSI is mostly noise; the report says so.
SMALL_SAMPLE = 100
# Categories with fewer reference rows than this (chi-square's rule of thumb for expected counts)
# share one "other" bin with categories the reference never saw. Without it, the long tail of 40
# countries, each seen once or twice in 500 rows, adds ~0.2 of PSI from sampling noise alone.
MIN_CATEGORY_COUNT = 5
MAX_LISTED_UNSEEN = 20


@dataclass(frozen=True)
class FeatureReference:
    """Bins learned from one reference column, and the reference's counts in them.

    Numeric bins: sorted `edges` cut the line into intervals (lo, hi]; an edge flagged in
    `points` is a value heavy enough (>= 1/bins of the reference) to get a bin of its own.
    Slot 2*i + 1 is the point bin of edge i; the last slot is "missing".
    Categorical bins: one per reference category with at least MIN_CATEGORY_COUNT rows, then
    "other" (the `rare` reference categories and any category the reference never had), then
    "missing".
    """

    name: str
    kind: str
    sensitive: bool
    counts: np.ndarray
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))
    points: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    categories: tuple[str, ...] = ()
    rare: tuple[str, ...] = ()
    values: np.ndarray | None = None  # sorted non-missing reference values, for KS

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def slots(self) -> int:
        return len(self.counts)

    def to_dict(self) -> dict[str, Any]:
        """The fitted bins, as stored with a model: enough to count new values into them."""
        return {
            "name": self.name,
            "kind": self.kind,
            "sensitive": self.sensitive,
            "counts": self.counts.tolist(),
            "edges": self.edges.tolist(),
            "points": self.points.tolist(),
            "categories": list(self.categories),
            "rare": list(self.rare),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureReference:
        return cls(
            name=data["name"],
            kind=data["kind"],
            sensitive=data["sensitive"],
            counts=np.asarray(data["counts"], dtype=np.int64),
            edges=np.asarray(data["edges"], dtype=np.float64),
            points=np.asarray(data["points"], dtype=bool),
            categories=tuple(data["categories"]),
            rare=tuple(data["rare"]),
        )

    def count(self, column: pd.Series) -> tuple[np.ndarray, list[str], int]:
        """Counts of `column` in these bins; categories the reference never had, and their rows."""
        if self.kind == "numeric":
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            return _count_numeric(values, self.edges, self.points), [], 0
        return _count_categorical(column, self.categories, self.rare)


def _count_numeric(values: np.ndarray, edges: np.ndarray, points: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    present = values[~missing]
    k = len(edges)
    if k:
        idx = np.searchsorted(edges, present, side="left")
        nearest = np.minimum(idx, k - 1)
        is_point = (idx < k) & (edges[nearest] == present) & points[nearest]
        binned = 2 * idx + is_point
    else:
        binned = np.zeros(len(present), dtype=np.int64)
    counts = np.bincount(binned, minlength=2 * k + 1)
    return np.append(counts, missing.sum())


def _distinct_counts(column: pd.Series) -> tuple[list[str], np.ndarray, int]:
    """Distinct non-missing values, their counts, and the missing count: one hashing pass,
    whatever the caller's dtype (the loader's Categorical, object, or pandas 3 strings)."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # the loader's output: codes exist already
        codes, uniques = column.cat.codes.to_numpy(), column.cat.categories
        present = codes[codes >= 0]
        counts = np.bincount(present, minlength=len(uniques))
        return [str(u) for u in uniques], counts, len(codes) - len(present)
    # pandas' own hash table, on whatever backs the strings: measured on 1M-row pandas 3 string
    # columns, 4x faster than counting Python strings with collections.Counter, 3x pd.factorize.
    tally = column.value_counts(dropna=False, sort=False)
    missing = tally.index.isna()
    present = tally[~missing]
    return [str(v) for v in present.index], present.to_numpy(np.int64), int(tally[missing].sum())


def _count_categorical(
    column: pd.Series, categories: tuple[str, ...], rare: tuple[str, ...]
) -> tuple[np.ndarray, list[str], int]:
    return _bin_distinct(*_distinct_counts(column), categories, rare)


def _bin_distinct(
    values: list[str],
    counts: np.ndarray,
    missing: int,
    categories: tuple[str, ...],
    rare: tuple[str, ...],
) -> tuple[np.ndarray, list[str], int]:
    """Bin counts from distinct values and their counts: the rows are never touched again."""
    slot_of = {c: i for i, c in enumerate(categories)}
    other = len(categories)  # rare reference categories and unseen ones share this slot
    slots = np.array([slot_of.get(v, other) for v in values], dtype=np.int64)
    binned = np.bincount(slots, weights=counts, minlength=other + 1).astype(np.int64)
    known = set(categories) | set(rare)
    unseen = [(v, c) for v, c in zip(values, counts, strict=True) if v not in known]
    unseen_names = sorted(v for v, _ in unseen)
    return np.append(binned, missing), unseen_names, int(sum(c for _, c in unseen))


def _distinct_sorted(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(return_counts=True) for an already sorted array, without sorting it again."""
    if not len(present):
        return present, np.empty(0, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(present[1:] != present[:-1]) + 1])
    return present[starts], np.diff(np.append(starts, len(present)))


def fit_feature(
    spec: ColumnSpec, column: pd.Series, *, bins: int = DEFAULT_BINS
) -> FeatureReference:
    """Learn one column's bins from the reference (see FeatureReference for the layout).
    Booleans and datetime inputs are numbers here, as the model reads them."""
    name = spec.name
    if spec.kind == "categorical":
        distinct = _distinct_counts(column)
        pairs = list(zip(distinct[0], distinct[1], strict=True))
        categories = tuple(sorted(v for v, c in pairs if c >= MIN_CATEGORY_COUNT))
        rare = tuple(sorted(v for v, c in pairs if 0 < c < MIN_CATEGORY_COUNT))
        binned, _, _ = _bin_distinct(*distinct, categories, rare)
        return FeatureReference(
            name, "categorical", spec.sensitive, binned, categories=categories, rare=rare
        )
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    present = np.sort(values[~np.isnan(values)])
    if len(present):
        quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
        distinct, freq = _distinct_sorted(present)
        heavy = distinct[freq >= len(present) / bins]
        edges = np.unique(np.concatenate([quantiles, heavy]))
        points = np.isin(edges, heavy)
    else:
        edges, points = np.empty(0), np.empty(0, dtype=bool)
    counts = _count_numeric(values, edges, points)
    return FeatureReference(name, "numeric", spec.sensitive, counts, edges, points, values=present)


def fit_reference(
    spec: DatasetSpec, frame: pd.DataFrame, *, bins: int = DEFAULT_BINS
) -> dict[str, FeatureReference]:
    """Learn bins for every feature of the spec (inputs and sensitive columns; the label is
    not a feature)."""
    return {name: fit_feature(spec.column(name), frame[name], bins=bins) for name in spec.features}


def psi(ref_counts: np.ndarray, new_counts: np.ndarray, *, epsilon: float = EPSILON) -> float:
    """Population stability index: sum over bins of (q - p) * ln(q / p), empty bins floored."""
    p = ref_counts / max(ref_counts.sum(), 1)
    q = new_counts / max(new_counts.sum(), 1)
    p = np.where(p == 0, epsilon, p)
    q = np.where(q == 0, epsilon, q)
    return float(np.sum((q - p) * np.log(q / p)))


def noise_psi(
    ref_counts: np.ndarray, n_ref: int, n_new: int, *, seed: Sequence[int], draws: int = NOISE_DRAWS
) -> tuple[float, float]:
    """Mean and 95th percentile of the PSI between two samples of these sizes drawn from the
    reference's own bin shares: the PSI that sampling noise alone produces."""
    total = ref_counts.sum()
    if total == 0 or n_ref == 0 or n_new == 0:
        return 0.0, 0.0
    shares = ref_counts / total
    rng = np.random.default_rng(list(seed))
    a = rng.multinomial(n_ref, shares, size=draws) / n_ref
    b = rng.multinomial(n_new, shares, size=draws) / n_new
    a = np.where(a == 0, EPSILON, a)
    b = np.where(b == 0, EPSILON, b)
    values = np.sum((b - a) * np.log(b / a), axis=1)
    return float(values.mean()), float(np.quantile(values, 0.95))


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), digits)


def _round_p(p: float | None) -> float | None:
    # p-values span many orders of magnitude: keep significant digits, not decimals.
    if p is None or not np.isfinite(p):
        return None
    return float(f"{p:.4g}")


def compare_feature(
    ref: FeatureReference, column: pd.Series, *, threshold: float
) -> dict[str, Any]:
    """One column of a new sample against its reference: PSI, and KS or chi-square."""
    counts, unseen, unseen_rows = ref.count(column)
    new_values = None
    if ref.kind == "numeric":
        new_values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        new_values = new_values[~np.isnan(new_values)]
    return compare_counts(
        ref,
        counts,
        threshold=threshold,
        unseen=unseen,
        unseen_rows=unseen_rows,
        new_values=new_values,
    )


def compare_counts(
    ref: FeatureReference,
    counts: np.ndarray,
    *,
    threshold: float,
    unseen: Sequence[str] = (),
    unseen_rows: int = 0,
    new_values: np.ndarray | None = None,
) -> dict[str, Any]:
    """A window's counts in the reference's bins against the reference. The rows themselves are
    not needed (a window's counts are sums of stored hourly counts); KS needs them and is left
    out without them. A column with no value in the window is "not observed": reported, never
    counted as drift."""
    n_ref, n_new = ref.n, int(counts.sum())
    observed = n_new > counts[-1]  # some value is present (the last slot counts missing ones)
    score = psi(ref.counts, counts) if observed else None
    noise_mean, noise_p95 = noise_psi(
        ref.counts, n_ref, max(n_new, 1), seed=(NOISE_SEED, zlib.crc32(ref.name.encode()))
    )
    detail: dict[str, Any] = {
        "kind": ref.kind,
        "role": "sensitive" if ref.sensitive else "model_input",
        "observed": bool(observed),
        "psi": _round(score),
        # Judged on the reported (rounded) value, so the report never contradicts itself.
        "drifted": bool(observed and _round(score) >= threshold),
        "psi_noise_mean": _round(noise_mean),
        "psi_noise_p95": _round(noise_p95),
        "n_ref": n_ref,
        "n_new": n_new,
        "missing_rate_ref": _round(ref.counts[-1] / max(n_ref, 1)),
        "missing_rate_new": _round(counts[-1] / max(n_new, 1)),
    }
    notes: list[str] = []
    if not observed:
        detail["verdict"] = "not observed"
        notes.append("no value in the new sample (all missing, or never sent): not observed")
    if ref.kind == "numeric":
        detail.update(_ks(ref, new_values, notes))
    else:
        detail.update(_chi_square(ref, counts, notes))
        detail.update(unseen_categories=list(unseen)[:MAX_LISTED_UNSEEN], unseen_count=unseen_rows)
    if observed and min(n_ref, n_new) < SMALL_SAMPLE:
        notes.append(f"fewer than {SMALL_SAMPLE} rows on one side: PSI is mostly noise")
    detail["notes"] = notes
    return detail


def _ks(ref: FeatureReference, new_values: np.ndarray | None, notes: list[str]) -> dict[str, Any]:
    ks_stat = ks_p = None
    if new_values is None:
        notes.append("counted in bins (no rows): KS not computed")
    elif ref.values is not None and len(ref.values) and len(new_values):
        result = stats.ks_2samp(ref.values, new_values)
        ks_stat, ks_p = float(result.statistic), float(result.pvalue)
    else:
        notes.append("no values on one side: KS not computed")
    if ref.values is not None and len(ref.values) and ref.values[0] == ref.values[-1]:
        notes.append("constant in the reference")
    return {"ks_statistic": _round(ks_stat), "ks_pvalue": _round_p(ks_p)}


def _chi_square(ref: FeatureReference, counts: np.ndarray, notes: list[str]) -> dict[str, Any]:
    table = np.vstack([ref.counts, counts])
    table = table[:, table.sum(axis=0) > 0]
    chi_p = None
    if table.shape[1] >= 2 and (table.sum(axis=1) > 0).all():
        chi_p = float(stats.chi2_contingency(table, correction=False).pvalue)
    else:
        notes.append("a single category on both sides: chi-square not computed")
    return {"chi2_pvalue": _round_p(chi_p)}


@dataclass(frozen=True)
class DriftReport:
    threshold: float
    details: dict[str, dict[str, Any]]

    @property
    def features(self) -> dict[str, float | None]:
        return {name: d["psi"] for name, d in self.details.items()}

    @property
    def overall_drift(self) -> bool:
        return any(d["drifted"] for d in self.details.values())

    def drifted_where(self, role: str) -> bool:
        return any(d["drifted"] for d in self.details.values() if d["role"] == role)

    def to_dict(self) -> dict[str, Any]:
        """The spec's shape first (threshold, overall_drift, features), then the detail."""
        return {
            "threshold": self.threshold,
            "overall_drift": self.overall_drift,
            "features": self.features,
            "model_input_drift": self.drifted_where("model_input"),
            "sensitive_drift": self.drifted_where("sensitive"),
            "not_observed": [n for n, d in self.details.items() if not d.get("observed", True)],
            "details": self.details,
        }


def compare(
    reference: dict[str, FeatureReference],
    new: pd.DataFrame,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> DriftReport:
    details = {
        name: compare_feature(ref, new[name], threshold=threshold)
        for name, ref in reference.items()
    }
    return DriftReport(threshold=threshold, details=details)


def compute_drift(
    spec: DatasetSpec,
    ref: pd.DataFrame,
    new: pd.DataFrame,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    bins: int = DEFAULT_BINS,
) -> DriftReport:
    """Drift of every feature of `new` against `ref` (two feature frames read by `spec`)."""
    if not threshold > 0:
        raise DataError(f"threshold must be positive, got {threshold}")
    return compare(fit_reference(spec, ref, bins=bins), new, threshold=threshold)


def references_to_json(reference: dict[str, FeatureReference]) -> str:
    return dumps_json({name: ref.to_dict() for name, ref in reference.items()})


def references_from_json(text: str) -> dict[str, FeatureReference]:
    return {name: FeatureReference.from_dict(data) for name, data in json.loads(text).items()}
