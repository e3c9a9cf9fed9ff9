"""Monitoring agent: observe (metrics history + drift report) -> think (rules) -> act (YAML plan).

The rules are data (RULES below), deterministic and free of I/O; an optional LLM may rewrite the
rationale and add allowed actions, but can never lower the rules' verdict. Only main() touches
files and the network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from src.errors import DataError
from src.fileio import run_cli, write_text_atomic

Status = Literal["healthy", "warn", "critical"]
Action = Literal[
    "open_incident", "trigger_retraining", "roll_back_model", "raise_thresholds", "do_nothing"
]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
SEVERITY: dict[str, int] = {"healthy": 0, "warn": 1, "critical": 2}

WINDOW = timedelta(days=7)
MIN_WINDOW_POINTS = 3
LATENCY_LIMIT_MS = 400.0
LATENCY_POINTS = 2
TOP_DRIFTED = 5

# --- observe ---------------------------------------------------------------------------------

Rate = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]


class MetricPoint(BaseModel):
    """One monitoring point; `timestamp` is accepted for `ts`. Naive times are taken as UTC."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    ts: datetime = Field(validation_alias=AliasChoices("ts", "timestamp"), strict=False)
    roc_auc: Rate
    pr_auc: Rate
    acc: Rate
    latency_p95_ms: Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=False)]
    error_rate: Rate

    @field_validator("ts", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # Only ISO-8601 text: a bare number would be read as seconds since 1970, silently.
        if not isinstance(value, str | datetime):
            raise ValueError("ts must be an ISO-8601 date-time string")
        return value

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DriftSummary(BaseModel):
    """The Part D drift report; extra keys (details, timestamps) are allowed and ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    overall_drift: bool
    threshold: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    features: dict[str, Annotated[float, Field(allow_inf_nan=False)] | None]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def parse_metrics_lines(lines: Sequence[str], *, source: str) -> list[MetricPoint]:
    """JSON lines -> points ordered by time. Blank lines are skipped; a bad line is a DataError
    naming `source` and the line number."""
    points = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            points.append(MetricPoint.model_validate_json(line))
        except ValidationError as exc:
            raise DataError(f"{source}:{number}: {_first_error(exc)}") from None
    if not points:
        raise DataError(f"{source}: no metrics points")
    return sorted(points, key=lambda p: p.ts)


def load_metrics(path: Path) -> list[MetricPoint]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_metrics_lines(text.splitlines(), source=str(path))


def load_drift(path: Path) -> DriftSummary:
    try:
        return DriftSummary.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except ValidationError as exc:
        raise DataError(f"{path}: not a drift report ({_first_error(exc)})") from None


# --- think -----------------------------------------------------------------------------------


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
    drift: DriftSummary | None
    points: list[MetricPoint] = field(repr=False)

    @classmethod
    def from_observations(cls, points: list[MetricPoint], drift: DriftSummary | None) -> Evidence:
        last = len(points) - 1
        roc_median, window = _median_before(points, last, "roc_auc")
        pr_median, _ = _median_before(points, last, "pr_auc")
        return cls(
            latest=points[last],
            window_points=window,
            roc_auc_median=roc_median,
            pr_auc_median=pr_median,
            roc_auc_drop=drop_pct(points, last, "roc_auc"),
            pr_auc_drop=drop_pct(points, last, "pr_auc"),
            latency_recent=[p.latency_p95_ms for p in points[-LATENCY_POINTS:]],
            drift=drift,
            points=points,
        )


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Status
    actions: tuple[str, ...]
    text: str
    fires: Callable[[Evidence], bool]


def _at_least(value: float | None, gate: float) -> bool:
    return value is not None and value >= gate


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
        lambda e: _at_least(e.roc_auc_drop, 3.0),
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
        lambda e: _at_least(e.roc_auc_drop, 6.0),
    ),
    Rule(
        "drift_and_pr_auc_critical",
        "critical",
        ("open_incident", "trigger_retraining"),
        "overall drift and PR-AUC down >= 5% vs its 7-day median",
        lambda e: bool(e.drift and e.drift.overall_drift) and _at_least(e.pr_auc_drop, 5.0),
    ),
)


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def findings_for(e: Evidence) -> list[dict[str, Any]]:
    """The evidence as small mappings, the spec's three first, with margins to every gate."""
    points = e.points

    def drop_streak(metric: str, gate: float) -> float:
        return _streak(points, lambda i: _at_least(drop_pct(points, i, metric), gate))[1]

    roc = {
        "roc_auc_drop_pct": _r(e.roc_auc_drop, 1),
        "roc_auc": round(e.latest.roc_auc, 4),
        "roc_auc_median_7d": _r(e.roc_auc_median, 4),
        "margin_to_warn_pct": _r(None if e.roc_auc_drop is None else 3.0 - e.roc_auc_drop, 1),
        "margin_to_critical_pct": _r(None if e.roc_auc_drop is None else 6.0 - e.roc_auc_drop, 1),
        "breach_hours": _r(drop_streak("roc_auc", 3.0), 1),
    }
    over, over_hours = _streak(points, lambda i: points[i].latency_p95_ms > LATENCY_LIMIT_MS)
    latency = {
        "latency_p95_ms": round(e.latest.latency_p95_ms),
        "limit_ms": LATENCY_LIMIT_MS,
        "points_over_limit_in_a_row": over,
        "breach_hours": round(over_hours, 1),
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


# --- act -------------------------------------------------------------------------------------


class AgentPlan(BaseModel):
    """The plan's schema: validated before it is written or served."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    findings: list[dict[str, Any]] = Field(min_length=1)
    actions: list[Action] = Field(min_length=1)
    page_oncall: bool
    rationale: str = Field(min_length=1, max_length=2000)
    rules_fired: list[str]
    generated_at: str

    @field_validator("actions")
    @classmethod
    def _unique(cls, actions: list[str]) -> list[str]:
        if len(set(actions)) != len(actions):
            raise ValueError("actions repeat")
        return actions


def rules_rationale(verdict: Verdict) -> str:
    e = verdict.evidence
    if not verdict.fired:
        parts = ["No gate is breached"]
        if e.roc_auc_drop is not None:
            parts.append(f"ROC-AUC is {e.roc_auc_drop:.1f}% off its 7-day median (warn at 3%)")
        if e.drift and e.drift.overall_drift:
            parts.append("drift is present, so watch PR-AUC (critical at 5% down with drift)")
        return "; ".join(parts) + "."
    sentences = []
    for rule in verdict.fired:
        if rule.name.startswith("roc_auc"):
            sentences.append(f"ROC-AUC fell {e.roc_auc_drop:.1f}% vs its 7-day median")
        elif rule.name == "latency_p95_warn":
            recent = ", ".join(f"{v:.0f}" for v in e.latency_recent)
            sentences.append(
                f"p95 latency > {LATENCY_LIMIT_MS:.0f} ms for two points ({recent} ms)"
            )
        else:
            sentences.append(f"drift is present and PR-AUC fell {e.pr_auc_drop:.1f}%")
    text = "; ".join(dict.fromkeys(sentences)) + "."
    if verdict.status == "critical":
        text += " Page on-call, open an incident, and follow the actions in order."
    elif (
        e.drift
        and e.drift.overall_drift
        and "drift_and_pr_auc_critical" not in {r.name for r in verdict.fired}
    ):
        text += (
            f" Drift is present; PR-AUC is down {e.pr_auc_drop or 0:.1f}% against the 5% gate "
            "that would make this critical."
        )
    return text[0].upper() + text[1:]


def build_plan(
    verdict: Verdict, *, now: datetime, rationale: str | None = None, extra: Sequence[str] = ()
) -> AgentPlan:
    actions = [a for rule in verdict.fired for a in rule.actions] + list(extra)
    actions = list(dict.fromkeys(a for a in actions if a in ACTIONS)) or ["do_nothing"]
    return AgentPlan(
        status=verdict.status,
        findings=findings_for(verdict.evidence),
        actions=actions,
        page_oncall=verdict.status == "critical",
        rationale=rationale or rules_rationale(verdict),
        rules_fired=[r.name for r in verdict.fired],
        generated_at=now.isoformat(timespec="seconds"),
    )


# --- the optional LLM ------------------------------------------------------------------------


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key: str | None = field(repr=False)  # never printed, never logged
    timeout: float = 10.0

    @classmethod
    def from_env(cls, *, required: bool) -> LLMConfig | None:
        base = os.environ.get("AGENT_LLM_BASE_URL", "").strip()
        if not base:
            if required:
                raise DataError("--llm needs AGENT_LLM_BASE_URL (an OpenAI-compatible endpoint)")
            return None
        return cls(
            base_url=base.rstrip("/"),
            model=os.environ.get("AGENT_LLM_MODEL", "gpt-4o-mini"),
            api_key=os.environ.get("AGENT_LLM_API_KEY") or None,
            timeout=float(os.environ.get("AGENT_LLM_TIMEOUT", "10")),
        )


class LLMReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    rationale: str = Field(min_length=1, max_length=2000)
    status: str | None = None
    extra_actions: list[str] = []


LLM_SYSTEM_PROMPT = (
    "You assist an on-call ML engineer. You get a monitoring verdict computed by fixed rules. "
    "Write a short rationale (at most 4 sentences) a person on call can act on. You may propose "
    f"extra actions from this list only: {', '.join(ACTIONS)}. You may raise the status, never "
    'lower it. Reply with JSON only: {"rationale": str, "status": str, "extra_actions": [str]}.'
)


def ask_llm(config: LLMConfig, plan: AgentPlan) -> LLMReply:
    """One chat-completions call; raises on any transport, HTTP or format problem."""
    import urllib.request

    payload = {
        "model": config.model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": LLM_SYSTEM_PROMPT},
            {"role": "user", "content": plan.model_dump_json()},
        ],
    }
    request = urllib.request.Request(  # noqa: S310 - the user configured this endpoint
        f"{config.base_url}/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if config.api_key:
        request.add_header("Authorization", f"Bearer {config.api_key}")
    with urllib.request.urlopen(request, timeout=config.timeout) as response:  # noqa: S310
        body = json.loads(response.read())
    content = body["choices"][0]["message"]["content"].strip()
    if content.startswith("```"):  # tolerate a fenced JSON block
        content = content.strip("`").removeprefix("json").strip()
    return LLMReply.model_validate_json(content)


def apply_llm(verdict: Verdict, plan: AgentPlan, config: LLMConfig, *, now: datetime) -> AgentPlan:
    """The LLM's reply within guardrails; any failure falls back to the rules-only plan."""
    try:
        reply = ask_llm(config, plan)
    except Exception as exc:  # network, timeout, HTTP error, refusal, garbage: all fall back
        note = {"llm": "unavailable; rules-only plan", "reason": type(exc).__name__}
        return plan.model_copy(update={"findings": [*plan.findings, note]})
    notes: dict[str, Any] = {"llm": "rationale written by the model"}
    status = verdict.status
    if reply.status in SEVERITY:
        if SEVERITY[reply.status] > SEVERITY[status]:
            status, notes["raised_status_to"] = reply.status, reply.status
        elif SEVERITY[reply.status] < SEVERITY[status]:
            notes["ignored_lower_status"] = reply.status
    dropped = [a for a in reply.extra_actions if a not in ACTIONS]
    if dropped:
        notes["dropped_actions"] = dropped
    raised = Verdict(status=status, fired=verdict.fired, evidence=verdict.evidence)
    updated = build_plan(
        raised,
        now=now,
        rationale=reply.rationale,
        extra=[a for a in reply.extra_actions if a in ACTIONS],
    )
    actions = [a for a in updated.actions if a != "do_nothing"] or ["do_nothing"]
    return updated.model_copy(update={"findings": [*updated.findings, notes], "actions": actions})


def monitor(
    points: list[MetricPoint],
    drift: DriftSummary | None,
    *,
    now: datetime,
    llm: LLMConfig | None = None,
) -> AgentPlan:
    """Observations -> plan: the one entry point the CLI and POST /monitor share."""
    verdict = judge(points, drift)
    plan = build_plan(verdict, now=now)
    return apply_llm(verdict, plan, llm, now=now) if llm else plan


def plan_yaml(plan: AgentPlan) -> str:
    return yaml.safe_dump(plan.model_dump(), sort_keys=False, allow_unicode=True, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m src.agent_monitor", description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics history (JSON lines)")
    parser.add_argument("--drift", type=Path, help="drift report (omit: drift is unknown)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/agent_plan.yaml"))
    parser.add_argument(
        "--llm", action="store_true", help="ask the LLM at AGENT_LLM_BASE_URL for the rationale"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        llm = LLMConfig.from_env(required=args.llm)
        points = load_metrics(args.metrics)
        drift = load_drift(args.drift) if args.drift else None
        plan = monitor(points, drift, now=datetime.now(UTC), llm=llm)
        write_text_atomic(args.out, plan_yaml(plan))
        print(f"status: {plan.status}; actions: {', '.join(plan.actions)}; wrote {args.out}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
