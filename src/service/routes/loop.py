"""The loop: labels for rows served earlier (POST /feedback), the agent's plan (POST /monitor)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, Depends, HTTPException, Request

from src.agent import (
    AgentPlan,
    DriftSummary,
    LLMConfig,
    MetricPoint,
    load_drift,
    load_metrics,
    monitor,
)
from src.agent.observations import describe_drift, describe_metrics, file_origin
from src.errors import DataError
from src.loop.labels import record_labels
from src.service.auth import authorize, bearer, require_token
from src.service.models import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    MonitorRequest,
)
from src.settings import Settings


def observations_for(
    payload: MonitorRequest, settings: Settings
) -> tuple[list[MetricPoint], DriftSummary | None, dict[str, dict[str, Any]]]:
    """What the body carries and where each input came from (the answer says so).

    An empty body judges the configured files. Metrics a body leaves out come from the configured
    file; a drift report it leaves out is unknown, never taken from a file that describes some
    other window."""
    body = {"from": "request body"}
    if payload.metrics:
        points = sorted(payload.metrics, key=lambda p: p.ts)
        metrics_origin = body
    else:
        points = load_metrics(settings.monitor_metrics_path)
        metrics_origin = {**file_origin(settings.monitor_metrics_path), "default": True}
    drift, drift_origin = payload.drift, body
    empty_body = payload.metrics is None and payload.drift is None
    if empty_body and settings.monitor_drift_path.is_file():
        drift = load_drift(settings.monitor_drift_path)
        drift_origin = {**file_origin(settings.monitor_drift_path), "default": True}
    sources = {
        "metrics": describe_metrics(points, metrics_origin),
        "drift": describe_drift(drift, drift_origin),
    }
    return points, drift, sources


TOO_LARGE = {"model": ErrorResponse, "description": "Body too large"}
MONITOR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid observations"},
    401: {"model": ErrorResponse, "description": "execute: true without a bearer token"},
    403: {
        "model": ErrorResponse,
        "description": "execute: true while AGENT_EXECUTE_OVER_HTTP is off, or a wrong token",
    },
    413: TOO_LARGE,
    503: {
        "model": ErrorResponse,
        "description": "Default files missing or unreadable, or the executor could not start",
    },
}
FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid labels"},
    401: {"model": ErrorResponse, "description": "No bearer token"},
    403: {"model": ErrorResponse, "description": "Wrong token, or none configured"},
    413: TOO_LARGE,
    503: {"model": ErrorResponse, "description": "The prediction log is off or unavailable"},
}


def execute_elsewhere(
    points: list[MetricPoint], drift: DriftSummary | None
) -> list[dict[str, Any]]:
    """`python -m src.agent_monitor --execute` on these observations, in a child process."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "metrics.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in points))
        command = [sys.executable, "-m", "src.agent_monitor", "--execute"]
        command += ["--metrics", str(work / "metrics.jsonl"), "--out", str(work / "plan.yaml")]
        if drift is not None:
            (work / "drift.json").write_text(drift.model_dump_json())
            command += ["--drift", str(work / "drift.json")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
        plan = work / "plan.yaml"
        if not plan.is_file():  # it could not even judge: nothing was done
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][-300:]
            raise HTTPException(503, f"executing the plan failed before acting: {last}")
        # Failed steps are in the plan's results (and the history); a rerun resumes them.
        return yaml.safe_load(plan.read_text()).get("executed") or []


def may_execute(request: Request, settings: Settings) -> None:
    """Acting from HTTP: off unless turned on, and then only with the service's token."""
    if not settings.agent_execute_over_http:
        raise HTTPException(
            403, "executing plans over HTTP is off: set AGENT_EXECUTE_OVER_HTTP=true"
        )
    authorize(request, bearer(request))


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/monitor",
        summary="The monitoring agent's plan, as JSON (same as the CLI's YAML)",
        response_model=AgentPlan,
        responses=MONITOR_RESPONSES,
        max_body_size=settings.monitor_max_body_bytes,
    )
    def monitor_plan(
        request: Request, payload: Annotated[MonitorRequest | None, Body()] = None
    ) -> AgentPlan:
        # A plain def: FastAPI runs it in a worker thread, since it may read files or ask an LLM.
        payload = payload or MonitorRequest()
        if payload.execute:
            may_execute(request, settings)
        try:
            points, drift, sources = observations_for(payload, settings)
        except DataError as exc:
            raise HTTPException(503, f"default monitoring files unusable: {exc}") from None
        plan = monitor(
            points,
            drift,
            now=datetime.now(UTC),
            llm=LLMConfig.from_env(required=False),
            sources=sources,
        )
        if payload.execute:  # in a process of its own: a web worker never trains
            plan = plan.model_copy(update={"executed": execute_elsewhere(points, drift)})
        return plan

    @router.post(
        "/feedback",
        summary="Ground-truth labels for rows served earlier, by prediction id",
        response_model=FeedbackResponse,
        responses=FEEDBACK_RESPONSES,
        max_body_size=settings.monitor_max_body_bytes,
        dependencies=[Depends(require_token)],
    )
    def feedback(payload: FeedbackRequest, request: Request) -> FeedbackResponse:
        # Idempotent: the same labels again change nothing; a different label is kept as a
        # correction. A label may arrive before its prediction is written (any worker, any
        # replica): it is stored now and matched when read.
        log = request.app.state.prediction_log
        if log is None:
            raise HTTPException(503, f"prediction log {request.app.state.prediction_log_status}")
        now = datetime.now(UTC)
        outcome = record_labels(
            log.engine, [(item.prediction_id, item.label) for item in payload.labels], now=now
        )
        kept_until = now + timedelta(hours=settings.label_pending_hours)
        return FeedbackResponse(
            **{k: v for k, v in vars(outcome).items()},
            pending_kept_until=kept_until.isoformat(timespec="seconds"),
        )

    return router
