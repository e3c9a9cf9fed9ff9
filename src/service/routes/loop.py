"""The loop: labels for rows served earlier (POST /feedback), the agent's plan (POST /monitor)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request

from src.agent import AgentPlan, LLMConfig, load_drift, load_metrics, monitor
from src.errors import DataError
from src.loop.feedback import record_feedback
from src.service.models import (
    ErrorResponse,
    FeedbackKey,
    FeedbackRequest,
    FeedbackResponse,
    MonitorRequest,
)
from src.settings import Settings


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()
    too_large = {"model": ErrorResponse, "description": "Body too large"}

    @router.post(
        "/monitor",
        summary="The monitoring agent's plan, as JSON (same as the CLI's YAML)",
        response_model=AgentPlan,
        responses={
            400: {"model": ErrorResponse, "description": "Invalid observations"},
            413: too_large,
            503: {"model": ErrorResponse, "description": "Default files missing or unreadable"},
        },
        max_body_size=settings.monitor_max_body_bytes,
    )
    def monitor_plan(payload: Annotated[MonitorRequest | None, Body()] = None) -> AgentPlan:
        # A plain def: FastAPI runs it in a worker thread, since it may read files or ask an LLM.
        payload = payload or MonitorRequest()
        try:
            points = payload.metrics or load_metrics(settings.monitor_metrics_path)
            drift = payload.drift
            if drift is None and settings.monitor_drift_path.is_file():
                drift = load_drift(settings.monitor_drift_path)
        except DataError as exc:
            raise HTTPException(503, f"default monitoring files unusable: {exc}") from None
        sorted_points = sorted(points, key=lambda p: p.ts)
        return monitor(
            sorted_points, drift, now=datetime.now(UTC), llm=LLMConfig.from_env(required=False)
        )

    @router.post(
        "/feedback",
        summary="Ground-truth labels for rows served earlier, by request id and row index",
        response_model=FeedbackResponse,
        responses={
            400: {"model": ErrorResponse, "description": "Invalid labels"},
            413: too_large,
            503: {
                "model": ErrorResponse,
                "description": "The prediction log is off or unavailable",
            },
        },
        max_body_size=settings.monitor_max_body_bytes,
    )
    def feedback(payload: FeedbackRequest, request: Request) -> FeedbackResponse:
        # Idempotent: sending the same labels again stores the same thing. Keys that match no
        # logged prediction are reported back, never silently dropped.
        log = request.app.state.prediction_log
        if log is None:
            raise HTTPException(503, f"prediction log {request.app.state.prediction_log_status}")
        log.flush()  # rows answered a moment ago may still be on their way to the database
        accepted, unknown = record_feedback(
            log.engine, [(item.request_id, item.row, item.label) for item in payload.labels]
        )
        return FeedbackResponse(
            accepted=accepted, unknown=[FeedbackKey(request_id=r, row=i) for r, i in unknown]
        )

    return router
