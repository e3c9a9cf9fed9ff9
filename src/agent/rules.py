"""The rules, as data: the spec's heuristics in a table, deterministic and free of I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from src.agent.evidence import LATENCY_LIMIT_MS, LATENCY_POINTS, Evidence, at_least
from src.agent.observations import DriftSummary, MetricPoint
from src.errors import DataError

Status = Literal["healthy", "warn", "critical"]
Action = Literal[
    "open_incident", "trigger_retraining", "roll_back_model", "raise_thresholds", "do_nothing"
]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
SEVERITY: dict[str, int] = {"healthy": 0, "warn": 1, "critical": 2}
# The order a plan lists (and the executor takes) its actions: stop the harm first (serve the last
# good model, tell people), then repair (retrain), then tune capacity.
ACTION_ORDER: tuple[str, ...] = (
    "roll_back_model",
    "open_incident",
    "trigger_retraining",
    "raise_thresholds",
    "do_nothing",
)
# The spec names the actions; where a name could mislead, the plan says what it means.
ACTION_NOTES: dict[str, str] = {
    "raise_thresholds": (
        "raise the serving capacity limits that hold p95 latency (autoscaling max instances, "
        "concurrency per instance); not the alert thresholds, not the decision threshold"
    ),
    "roll_back_model": "serve the previous champion again",
    "trigger_retraining": "train a challenger on recent labelled traffic, then gate it",
}


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Status
    actions: tuple[str, ...]
    text: str
    fires: Callable[[Evidence], bool]


def _latency_breached(e: Evidence) -> bool:
    return len(e.latency_recent) == LATENCY_POINTS and all(
        v > LATENCY_LIMIT_MS for v in e.latency_recent
    )


# The spec's heuristics, as data. Order matters only for reading: severity only ever rises.
RULES: tuple[Rule, ...] = (
    Rule(
        "roc_auc_drop_warn",
        "warn",
        ("trigger_retraining",),
        "ROC-AUC down >= 3% vs its 7-day median",
        lambda e: at_least(e.roc_auc_drop, 3.0),
    ),
    Rule(
        "latency_p95_warn",
        "warn",
        ("raise_thresholds",),
        f"p95 latency > {LATENCY_LIMIT_MS:.0f} ms on each of the last {LATENCY_POINTS} points",
        _latency_breached,
    ),
    Rule(
        "roc_auc_drop_critical",
        "critical",
        ("roll_back_model", "open_incident"),
        "ROC-AUC down >= 6% vs its 7-day median",
        lambda e: at_least(e.roc_auc_drop, 6.0),
    ),
    Rule(
        "drift_and_pr_auc_critical",
        "critical",
        ("open_incident", "trigger_retraining"),
        "drift of model inputs and PR-AUC down >= 5% vs its 7-day median",
        # Drift of model inputs only: a sensitive column's drift is a finding, never a page.
        lambda e: bool(e.drift and e.drift.inputs_drifted) and at_least(e.pr_auc_drop, 5.0),
    ),
)


@dataclass(frozen=True)
class Verdict:
    status: Status
    fired: list[Rule]
    evidence: Evidence


def judge(points: list[MetricPoint], drift: DriftSummary | None) -> Verdict:
    """Apply RULES in order; severity only rises."""
    if not points:
        raise DataError("no metrics points to judge")
    evidence = Evidence.from_observations(points, drift)
    status: Status = "healthy"
    fired = []
    for rule in RULES:
        if rule.fires(evidence):
            fired.append(rule)
            if SEVERITY[rule.severity] > SEVERITY[status]:
                status = rule.severity
    return Verdict(status=status, fired=fired, evidence=evidence)
