"""Operations: liveness, readiness, metadata and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from src.loop.metrics_files import collect
from src.model.predictor import Predictor
from src.service.auth import require_token
from src.service.body import error
from src.service.models import ErrorResponse
from src.service.state import ModelState, get_predictor, get_state, log_status, publish
from src.settings import Settings

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No bearer token"},
    403: {"model": ErrorResponse, "description": "Wrong token, or none configured"},
    409: {"model": ErrorResponse, "description": "This service serves a folder, not the registry"},
}
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Not ready, with the reason"}
}


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.get("/health", summary="Liveness: the process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        summary="Readiness: the model is loaded, verified and warmed up",
        responses=NOT_READY,
    )
    async def ready(request: Request, state: Annotated[ModelState, Depends(get_state)]) -> Response:
        return readiness(state, request.app.state, settings)

    @router.get(
        "/metadata",
        summary="Model version, training metrics, threshold and input schema",
        responses={503: {"model": ErrorResponse}},
    )
    async def metadata(predictor: Annotated[Predictor, Depends(get_predictor)]) -> dict[str, Any]:
        return describe_model(predictor, settings)

    @router.get(
        "/metrics", summary="Prometheus metrics, added up over all workers", response_class=Response
    )
    def prometheus_metrics(request: Request) -> Response:
        # A plain def (a worker thread): it reads every process's file of this run.
        publish(request.app.state)  # this worker's latest; the others publish twice a second
        folder = request.app.state.metrics.files.folder
        body = collect(folder) if folder else generate_latest(request.app.state.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @router.post(
        "/admin/reload",
        summary="Look at the registry's champion now (every worker also looks every few seconds)",
        responses=AUTH_RESPONSES,
        dependencies=[Depends(require_token)],
    )
    async def reload(request: Request) -> dict[str, str]:
        if request.app.state.registry is None:
            raise HTTPException(409, "this service serves ARTIFACTS_DIR, not the registry")
        request.app.state.reload.set()
        return {
            "status": "reloading: this worker looks at the champion within 50 ms, and tries "
            "again a champion it refused"
        }

    return router


def readiness(state: ModelState, app_state: Any, settings: Settings) -> Response:
    """/ready: 200 with what serves, or 503 with why not; refused champions with their retry."""
    if state.predictor is None:
        retries = [r.next_try_at for r in state.refused.values() if r.next_try_at]
        retry = f" (tries again at {min(retries).isoformat(timespec='seconds')})" if retries else ""
        return error(503, f"not ready: {state.reason}{retry}")
    body = {
        "status": "ready",
        "model_version": state.predictor.version,
        "engine": state.predictor.engine,
        "model_source": "folder" if settings.artifacts_dir else "registry champion",
        "prediction_log": log_status(app_state),
    }
    if state.refused:  # a newer champion failed verification: the model above still serves
        body["not_served"] = {v: r.describe() for v, r in state.refused.items()}
    return Response(orjson.dumps(body), media_type="application/json")


def describe_model(predictor: Predictor, settings: Settings) -> dict[str, Any]:
    manifest, metrics_json = predictor.bundle.manifest, predictor.bundle.metrics
    return {
        "model_version": predictor.version,
        "git_sha": manifest.get("git_sha"),
        "data_sha256": manifest["data_sha256"],
        "trained_at": manifest["created_at"],
        "engine": predictor.engine,
        "decision_threshold": predictor.threshold,
        # Sets trained before mitigations existed were plain models.
        "mitigation": manifest.get("mitigation", {"name": "none"}),
        "validation_metrics": {
            k: metrics_json[k] for k in ("roc_auc", "pr_auc", "accuracy", "log_loss", "brier")
        },
        "acceptance": metrics_json["acceptance"],
        "input_schema": predictor.contract.describe(),
        "limits": {"max_rows": settings.max_rows, "max_body_bytes": settings.max_body_bytes},
        "files": manifest["files"],
        "links": {
            **({"report": "/report"} if predictor.bundle.card else {}),
            "openapi": "/openapi.json",
            "docs": "/docs",
        },
    }
