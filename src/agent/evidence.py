"""Evidence: every number the rules look at, computed once from the observations, and the
findings the plan shows (each number with its margin to the gate and how long a breach lasted).

Quality is judged for the current model: the version serving at the latest point (the end of
the latest hour). Its latest value is its own; the 7-day medians use its own points, and say so
when there are too few and they fall back to every version. Everything here is O(n log n) in the
points: one sliding-window median pass per metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from src.agent.observations import DriftSummary, MetricPoint

WINDOW = timedelta(days=7)
MIN_WINDOW_POINTS = 3
LATENCY_LIMIT_MS = 400.0
LATENCY_POINTS = 2
TOP_DRIFTED = 5
ROC_WARN, ROC_CRITICAL, PR_CRITICAL = 3.0, 6.0, 5.0


def medians_before(
    times: Sequence[datetime], values: Sequence[float]
) -> list[tuple[float | None, int]]:
    """For every point: the median of the values whose time lies in the WINDOW before it (its
    own time excluded), and how many there are. Times are sorted. pandas' time-based rolling
    window (a skip list, O(n log n)); `closed="left"` is exactly [ts - WINDOW, ts)."""
    import pandas as pd  # here: a serving worker that never judges never imports pandas

    series = pd.Series(values, index=pd.DatetimeIndex(times), dtype="float64")
    rolling = series.rolling(WINDOW, closed="left", min_periods=1)
    medians, counts = rolling.median().to_numpy(), np.nan_to_num(rolling.count().to_numpy())
    return [
        (None if count == 0 else float(median), int(count))
        for median, count in zip(medians, counts, strict=True)
    ]


def _drops(medians: list[tuple[float | None, int]], values: Sequence[float]) -> list[float | None]:
    return [
        None if median is None or median == 0 else (median - value) / median * 100
        for (median, _), value in zip(medians, values, strict=True)
    ]


def _trailing(flags: Sequence[bool], times: Sequence[datetime]) -> tuple[int, float]:
    """How many latest points in a row hold, and the hours that streak spans."""
    count = 0
    for flag in reversed(flags):
        if not flag:
            break
        count += 1
    if not count:
        return 0, 0.0
    return count, (times[-1] - times[-count]).total_seconds() / 3600


def at_least(value: float | None, gate: float) -> bool:
    return value is not None and value >= gate


@dataclass(frozen=True)
class Quality:
    """One quality metric's view: the latest value, its 7-day median and drop, the streak."""

    latest: float | None = None
    median: float | None = None
    drop: float | None = None
    window_points: int = 0
    breach_hours: float = 0.0


def _quality(
    points: list[MetricPoint], metric: str, version: str | None, gate: float
) -> tuple[Quality, bool]:
    """The metric of the current version: its latest value is always its own (never a retired
    version's); its 7-day medians come from its own points, or from every version's when it has
    MIN_WINDOW_POINTS or fewer of its own (and it says so)."""
    measured = [p for p in points if getattr(p, metric) is not None]
    mine = [p for p in measured if version is None or p.model_version == version]
    if not mine:
        return Quality(), False
    fell_back = version is not None and len(mine) <= MIN_WINDOW_POINTS < len(measured)
    baseline = measured if fell_back else mine
    medians = medians_before([p.ts for p in baseline], [getattr(p, metric) for p in baseline])
    at = {id(p): m for p, m in zip(baseline, medians, strict=True)}
    mine_medians = [at[id(p)] for p in mine]
    values = [getattr(p, metric) for p in mine]
    drops = _drops(mine_medians, values)
    _, hours = _trailing([at_least(d, gate) for d in drops], [p.ts for p in mine])
    median, window = mine_medians[-1]
    return Quality(values[-1], median, drops[-1], window, hours), fell_back


@dataclass(frozen=True)
class Evidence:
    """Everything the rules look at, computed once from the observations."""

    latest: MetricPoint
    model_version: str | None
    fell_back_to_all_versions: bool
    roc: Quality
    pr: Quality
    latency_recent: list[float]
    latency_over: int  # latest points in a row over the limit
    latency_over_hours: float  # the hours that streak spans
    drift: DriftSummary | None
    error_rate: float | None
    error_rate_median: float | None
    points: list[MetricPoint] = field(repr=False)

    # The names the rules and the rationale read.
    @property
    def roc_auc_drop(self) -> float | None:
        return self.roc.drop

    @property
    def pr_auc_drop(self) -> float | None:
        return self.pr.drop

    @property
    def roc_auc_median(self) -> float | None:
        return self.roc.median

    @property
    def pr_auc_median(self) -> float | None:
        return self.pr.median

    @property
    def window_points(self) -> int:
        return self.roc.window_points

    @classmethod
    def from_observations(cls, points: list[MetricPoint], drift: DriftSummary | None) -> Evidence:
        # The version serving at the latest point (the end of the latest hour), not the one that
        # answered the latest quality point: after a switch the retired one is never judged.
        versions = [p.model_version for p in points if p.model_version is not None]
        version = versions[-1] if versions else None
        roc, fell_back = _quality(points, "roc_auc", version, ROC_WARN)
        pr, _ = _quality(points, "pr_auc", version, PR_CRITICAL)
        timed = [p for p in points if p.latency_p95_ms is not None]
        times = [p.ts for p in timed]
        over, over_hours = _trailing([p.latency_p95_ms > LATENCY_LIMIT_MS for p in timed], times)
        errors = [p for p in points if p.error_rate is not None]
        error_median = None
        if errors:
            error_median = medians_before([p.ts for p in errors], [p.error_rate for p in errors])[
                -1
            ][0]
        return cls(
            latest=points[-1],
            model_version=version,
            fell_back_to_all_versions=fell_back,
            roc=roc,
            pr=pr,
            latency_recent=[p.latency_p95_ms for p in timed[-LATENCY_POINTS:]],
            latency_over=over,
            latency_over_hours=over_hours,
            drift=drift,
            error_rate=errors[-1].error_rate if errors else None,
            error_rate_median=error_median,
            points=points,
        )


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def findings_for(e: Evidence) -> list[dict[str, Any]]:
    """The evidence as small mappings, the spec's three first, with margins to every gate."""
    roc = {
        "roc_auc_drop_pct": _r(e.roc.drop, 1),
        "roc_auc": _r(e.roc.latest, 4),
        "roc_auc_median_7d": _r(e.roc.median, 4),
        "margin_to_warn_pct": _r(None if e.roc.drop is None else ROC_WARN - e.roc.drop, 1),
        "margin_to_critical_pct": _r(None if e.roc.drop is None else ROC_CRITICAL - e.roc.drop, 1),
        "breach_hours": _r(e.roc.breach_hours, 1),
    }
    latency = {
        "latency_p95_ms": None if not e.latency_recent else round(e.latency_recent[-1]),
        "limit_ms": LATENCY_LIMIT_MS,
        "points_over_limit_in_a_row": e.latency_over,
        "breach_hours": round(e.latency_over_hours, 1),
    }
    pr = {
        "pr_auc_drop_pct": _r(e.pr.drop, 1),
        "pr_auc": _r(e.pr.latest, 4),
        "pr_auc_median_7d": _r(e.pr.median, 4),
        "margin_to_critical_with_drift_pct": _r(
            None if e.pr.drop is None else PR_CRITICAL - e.pr.drop, 1
        ),
    }
    errors = {
        "error_rate": _r(e.error_rate, 4),
        "error_rate_median_7d": _r(e.error_rate_median, 4),
        "trend": _trend(e.error_rate, e.error_rate_median),
    }
    return [roc, latency, _drift_finding(e.drift), pr, errors, _history_finding(e)]


def _drift_finding(drift: DriftSummary | None) -> dict[str, Any]:
    if drift is None:
        return {"drift_overall": None, "note": "no drift report given: drift unknown"}
    ranked = sorted(
        ((n, v) for n, v in drift.features.items() if v is not None),
        key=lambda item: (-item[1], item[0]),
    )
    finding: dict[str, Any] = {
        "drift_overall": drift.overall_drift,
        "model_input_drift": drift.inputs_drifted,
        "threshold": drift.threshold,
        "top_drifted": [
            {name: round(value, 3)}
            for name, value in ranked[:TOP_DRIFTED]
            if value >= drift.threshold
        ],
    }
    if drift.sensitive_drift:
        finding["sensitive_drift"] = (
            "a sensitive column drifted: a finding to look at, never a page on its own"
        )
    if drift.not_observed:
        finding["not_observed"] = drift.not_observed
    if (attribution := drift.attribution_drift) is not None:
        finding["attribution_drift"] = [
            {"column": name, **attribution.columns.get(name, {})} for name in attribution.drifted
        ]
        finding["attribution_threshold"] = attribution.threshold
        finding["attribution_rows"] = attribution.rows
    return finding


def _history_finding(e: Evidence) -> dict[str, Any]:
    history: dict[str, Any] = {
        "history_points_7d": e.window_points,
        "latest_ts": e.latest.ts.isoformat(),
        "model_version": e.model_version,
    }
    if e.fell_back_to_all_versions:
        history["medians_from"] = (
            f"every version: the current one ({e.model_version}) has {MIN_WINDOW_POINTS} or "
            "fewer quality points of its own"
        )
    elif e.model_version is not None and e.roc.latest is None:
        history["medians_from"] = (
            f"none: the current version ({e.model_version}) has no quality point yet"
        )
    elif e.model_version is not None:
        history["medians_from"] = f"model version {e.model_version} only"
    if e.window_points < MIN_WINDOW_POINTS:
        history["note"] = (
            f"fewer than {MIN_WINDOW_POINTS} points in the 7 days before the latest: "
            "the medians are weak; judged on what is there"
        )
    return history


def _trend(latest: float | None, median: float | None) -> str:
    if latest is None or median is None:
        return "unknown"
    if latest > median * 1.2 and latest - median > 0.001:
        return "rising"
    if latest < median * 0.8 and median - latest > 0.001:
        return "falling"
    return "flat"
