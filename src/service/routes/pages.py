"""Pages for people: the index (/), the model card (/report) and the API docs (/docs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from src.agent import DriftSummary, load_metrics, monitor
from src.agent.observations import describe_drift, describe_metrics, file_origin
from src.errors import DataError
from src.report.pages import (
    Monitoring,
    attached_mitigation,
    described,
    fill,
    monitoring_badges,
    monitoring_section,
    read_monitoring,
    registry_section,
    served_block,
)
from src.service.body import error
from src.settings import Settings

DOCS_ASSETS = "/docs/assets"
# The page is self-contained: forbid it everything but its own styles and data images.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The page"},
    404: {
        "description": "The served artifact set has no model card",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    },
}
REPORT_RESPONSES[503] = {
    "description": "Model not loaded",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/report",
        summary="The served model's card: one self-contained HTML page, monitoring included",
        response_class=HTMLResponse,
        responses=REPORT_RESPONSES,
    )
    def report(request: Request) -> Response:
        # A plain def: it reads files and runs the agent, so FastAPI runs it in a worker thread.
        return served_card(request, settings)

    @router.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        # Swagger UI from the service's own files (a pinned package): no CDN, works offline.
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{request.app.title}: API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get("/", summary="What this service offers: its endpoints")
    async def index(request: Request) -> dict[str, Any]:
        endpoints = {
            f"{method.upper()} {path}": operation.get("summary", "")
            for path, operations in request.app.openapi()["paths"].items()
            for method, operation in operations.items()
        }
        return {"service": request.app.title, "docs": "/docs", "endpoints": endpoints}

    return router


def served_card(request: Request, settings: Settings) -> Response:
    """The card of the model this worker serves, its live parts filled in."""
    predictor = request.app.state.model.predictor
    if predictor is None:
        return error(503, request.app.state.model.not_loaded)
    card = predictor.bundle.card
    if card is None:
        return error(
            404,
            f"the artifact set in {predictor.bundle.folder} has no model card "
            "(it was trained before cards were built): train again",
        )
    results = monitoring_results(settings)
    registry = request.app.state.registry
    history = ""
    if registry is not None:
        history = registry_section(
            registry.alias("champion"), predictor.version, registry.history(limit=20)
        )
    bundle = predictor.bundle
    page = fill(
        card,
        served=served_block(bundle.manifest, predictor.version, bundle.metrics),
        badges=monitoring_badges(results),
        monitoring=monitoring_section(results),
        registry=history,
        mitigation=attached_mitigation(bundle.folder),
    )
    return HTMLResponse(page, headers={"Content-Security-Policy": REPORT_POLICY})


def monitoring_results(settings: Settings) -> list[Monitoring]:
    """What the card shows under monitoring, each result labelled with what it is: the live loop's
    latest plan (from the service's own log), and what POST /monitor answers with an empty body."""
    results = []
    live = settings.monitor_live_dir
    if (live / "agent_plan.yaml").is_file():
        results.append(
            read_monitoring(
                f"live loop ({live})", live / "agent_plan.yaml", live / "drift_report.json"
            )
        )
    metrics_path, drift_path = settings.monitor_metrics_path, settings.monitor_drift_path
    try:
        points = load_metrics(metrics_path)
        drift_raw = json.loads(drift_path.read_text()) if drift_path.is_file() else None
        drift = DriftSummary.model_validate(drift_raw) if drift_raw else None
    except (DataError, ValueError):
        return results
    sources = {
        "metrics": describe_metrics(points, file_origin(metrics_path)),
        "drift": describe_drift(drift, file_origin(drift_path) if drift else {}),
    }
    plan = monitor(points, drift, now=datetime.now(UTC), sources=sources).model_dump()
    label = "configured files (what POST /monitor judges with an empty body)"
    results.append(Monitoring(label, plan, drift_raw, described(drift_path) if drift else None))
    return results
