"""Evidence: every number the rules look at, computed once from the observations, and the
findings the plan shows (each number with its margin to the gate and how long a breach lasted)."""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from src.agent.observations import DriftSummary, MetricPoint

WINDOW = timedelta(days=7)
MIN_WINDOW_POINTS = 3
LATENCY_LIMIT_MS = 400.0
LATENCY_POINTS = 2
TOP_DRIFTED = 5


def _minus_window(ts: datetime) -> datetime:
    try:
        return ts - WINDOW
    except OverflowError:  # a point in year 1: its window reaches before datetime's range
        return datetime.min.replace(tzinfo=UTC)


def _median_before(points: list[MetricPoint], index: int, metric: str) -> tuple[float | None, int]:
    """Median of `metric` over points in the WINDOW before points[index] (that point excluded)."""
    times = [p.ts for p in points]
    start = bisect_left(times, _minus_window(points[index].ts))
    end = bisect_left(times, points[index].ts)
    window = [getattr(p, metric) for p in points[start:end]]
    return (statistics.median(window) if window else None), len(window)


def drop_pct(points: list[MetricPoint], index: int, metric: str) -> float | None:
    median, _ = _median_before(points, index, metric)
    if median is None or median == 0:
        return None
    return (median - getattr(points[index], metric)) / median * 100


def _streak(points: list[MetricPoint], holds: Callable[[int], bool]) -> tuple[int, float]:
    """How many latest points in a row satisfy `holds`, and the hours that streak spans."""
    count = 0
    for i in range(len(points) - 1, -1, -1):
        if not holds(i):
            break
        count += 1
    if count == 0:
        return 0, 0.0
    hours = (points[-1].ts - points[-count].ts).total_seconds() / 3600
    return count, hours


@dataclass(frozen=True)
class Evidence:
    """Everything the rules look at, computed once from the observations."""

    latest: MetricPoint
    window_points: int
    roc_auc_median: float | None
    pr_auc_median: float | None
    roc_auc_drop: float | None
    pr_auc_drop: float | None
    latency_recent: list[float]
    latency_over: int  # latest points in a row over the limit
    latency_over_hours: float  # the hours that streak spans
    drift: DriftSummary | None
    points: list[MetricPoint] = field(repr=False)

    @classmethod
    def from_observations(cls, points: list[MetricPoint], drift: DriftSummary | None) -> Evidence:
        last = len(points) - 1
        roc_median, window = _median_before(points, last, "roc_auc")
        pr_median, _ = _median_before(points, last, "pr_auc")
        over, over_hours = _streak(points, lambda i: points[i].latency_p95_ms > LATENCY_LIMIT_MS)
        return cls(
            latest=points[last],
            window_points=window,
            roc_auc_median=roc_median,
            pr_auc_median=pr_median,
            roc_auc_drop=drop_pct(points, last, "roc_auc"),
            pr_auc_drop=drop_pct(points, last, "pr_auc"),
            latency_recent=[p.latency_p95_ms for p in points[-LATENCY_POINTS:]],
            latency_over=over,
            latency_over_hours=over_hours,
            drift=drift,
            points=points,
        )


def at_least(value: float | None, gate: float) -> bool:
    return value is not None and value >= gate


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def findings_for(e: Evidence) -> list[dict[str, Any]]:
    """The evidence as small mappings, the spec's three first, with margins to every gate."""
    points = e.points

    def drop_streak(metric: str, gate: float) -> float:
        return _streak(points, lambda i: at_least(drop_pct(points, i, metric), gate))[1]

    roc = {
        "roc_auc_drop_pct": _r(e.roc_auc_drop, 1),
        "roc_auc": round(e.latest.roc_auc, 4),
        "roc_auc_median_7d": _r(e.roc_auc_median, 4),
        "margin_to_warn_pct": _r(None if e.roc_auc_drop is None else 3.0 - e.roc_auc_drop, 1),
        "margin_to_critical_pct": _r(None if e.roc_auc_drop is None else 6.0 - e.roc_auc_drop, 1),
        "breach_hours": _r(drop_streak("roc_auc", 3.0), 1),
    }
    latency = {
        "latency_p95_ms": round(e.latest.latency_p95_ms),
        "limit_ms": LATENCY_LIMIT_MS,
        "points_over_limit_in_a_row": e.latency_over,
        "breach_hours": round(e.latency_over_hours, 1),
    }
    drift: dict[str, Any] = {"drift_overall": None if e.drift is None else e.drift.overall_drift}
    if e.drift is None:
        drift["note"] = "no drift report given: drift unknown"
    else:
        ranked = sorted(
            ((n, v) for n, v in e.drift.features.items() if v is not None),
            key=lambda item: (-item[1], item[0]),
        )
        drift["threshold"] = e.drift.threshold
        drift["top_drifted"] = [
            {name: round(value, 3)}
            for name, value in ranked[:TOP_DRIFTED]
            if value >= e.drift.threshold
        ]
    pr = {
        "pr_auc_drop_pct": _r(e.pr_auc_drop, 1),
        "pr_auc": round(e.latest.pr_auc, 4),
        "pr_auc_median_7d": _r(e.pr_auc_median, 4),
        "margin_to_critical_with_drift_pct": _r(
            None if e.pr_auc_drop is None else 5.0 - e.pr_auc_drop, 1
        ),
    }
    error_median, _ = _median_before(points, len(points) - 1, "error_rate")
    errors = {
        "error_rate": round(e.latest.error_rate, 4),
        "error_rate_median_7d": _r(error_median, 4),
        "trend": _trend(e.latest.error_rate, error_median),
    }
    history = {
        "history_points_7d": e.window_points,
        "latest_ts": e.latest.ts.isoformat(),
    }
    if e.window_points < MIN_WINDOW_POINTS:
        history["note"] = (
            f"fewer than {MIN_WINDOW_POINTS} points in the 7 days before the latest: "
            "the medians are weak; judged on what is there"
        )
    return [roc, latency, drift, pr, errors, history]


def _trend(latest: float, median: float | None) -> str:
    if median is None:
        return "unknown"
    if latest > median * 1.2 and latest - median > 0.001:
        return "rising"
    if latest < median * 0.8 and median - latest > 0.001:
        return "falling"
    return "flat"
