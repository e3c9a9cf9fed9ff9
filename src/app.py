"""The HTTP service: /health, /ready, /metadata, /predict, /feedback, /monitor, /report, /metrics.

`uvicorn src.app:app`. The model is loaded in the lifespan, never at import; if the artifacts
cannot be verified the process stays up, /ready says why, and /predict answers 503.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from src.agent_monitor import (
    AgentPlan,
    DriftSummary,
    LLMConfig,
    MetricPoint,
    load_drift,
    load_metrics,
    monitor,
)
from src.artifacts import load_bundle
from src.contract import InputContract, format_errors
from src.errors import ArtifactError, DataError
from src.observability import (
    AccessLog,
    RequestContextMiddleware,
    ServiceMetrics,
    configure_logging,
)
from src.prediction_log import PredictionLog, Served, record_feedback
from src.predictor import Predictor
from src.settings import Settings, get_settings

JSON_TYPES = ("application/json", "text/json")
REPORT_FILE = "report.html"
SHIP_SECONDS = 0.05  # how often the prediction log's pending requests go to its writer


class Prediction(BaseModel):
    probability: float = Field(ge=0, le=1)
    class_: int = Field(alias="class", ge=0, le=1)


class PredictResponse(BaseModel):
    model_version: str
    threshold: float
    predictions: list[Prediction]


class RowError(BaseModel):
    row: int | None
    field: str | None
    message: str
    type: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[RowError] = []


class MonitorRequest(BaseModel):
    """Observations to judge; what is left out comes from the configured default files."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[MetricPoint] | None = Field(default=None, min_length=1, max_length=100_000)
    drift: DriftSummary | None = None


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=128)
    row: int = Field(ge=0, le=1_000_000, description="Row index within that request")
    label: Literal[0, 1] = Field(description="1 when the true income is > 50K")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(min_length=1, max_length=100_000)


class FeedbackKey(BaseModel):
    request_id: str
    row: int


class FeedbackResponse(BaseModel):
    accepted: int
    unknown: list[FeedbackKey]


class ModelState:
    """What the lifespan loaded: a verified predictor, or the reason there is none."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.reason = "starting"

    @property
    def not_loaded(self) -> str:
        return f"model not loaded: {self.reason}"


def error(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> Response:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def load_predictor(settings: Settings, logger: logging.Logger) -> ModelState:
    state = ModelState()
    try:
        bundle = load_bundle(settings.artifacts_dir)
        try:
            predictor = Predictor(
                bundle, engine=settings.predict_engine, max_rows=settings.max_rows
            )
        except ImportError as exc:  # lleaves/llvmlite unusable here: serve the same model slower
            logger.warning("lleaves unavailable (%s); serving with LightGBM's booster", exc)
            predictor = Predictor(bundle, engine="booster", max_rows=settings.max_rows)
        difference = predictor.self_check()
    except ArtifactError as exc:
        state.reason = str(exc)
        logger.error("model not loaded: %s", exc)
        return state
    state.predictor, state.reason = predictor, "ready"
    logger.info(
        "model loaded",
        extra={
            "fields": {
                "model_version": predictor.version,
                "engine": predictor.engine,
                "self_check_max_difference": difference,
            }
        },
    )
    return state


# Dependencies are async on purpose: FastAPI runs sync ones in a thread pool, which costs more
# than a whole single-row prediction.
async def get_state(request: Request) -> ModelState:
    return request.app.state.model


async def get_predictor(state: Annotated[ModelState, Depends(get_state)]) -> Predictor:
    if state.predictor is None:
        raise HTTPException(status_code=503, detail=state.not_loaded)
    return state.predictor


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) before parsing when over `limit`; gzip is inflated, bounded."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type.lower() not in JSON_TYPES:
        raise HTTPException(415, f"Content-Type must be application/json, got '{content_type}'")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"body exceeds the limit of {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            inflated = inflater.decompress(bytes(body), limit + 1)
        except zlib.error:
            raise HTTPException(
                400, "Content-Encoding is gzip but the body is not valid gzip"
            ) from None
        if len(inflated) > limit or inflater.unconsumed_tail:
            raise HTTPException(413, f"inflated body exceeds the limit of {limit} bytes")
        return inflated
    if encoding != "identity":
        raise HTTPException(
            415, f"Content-Encoding '{encoding}' is not supported (use gzip or none)"
        )
    return bytes(body)


def parse_rows(
    body: bytes, predictor: Predictor, max_rows: int
) -> tuple[list[dict[str, Any]], np.ndarray | None, Response | None]:
    """(rows, encoded matrix from the fast path or None, None) or (_, _, the error response)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None  # the validator below reports it, with position
    if type(parsed) is list:
        if not parsed:
            return [], None, error(400, "the body is an empty list; send at least one row")
        if len(parsed) > max_rows:
            return (
                [],
                None,
                error(413, f"{len(parsed)} rows exceed the limit of {max_rows} per request"),
            )
        if predictor.engine != "pipeline":
            matrix = predictor.encoder.encode(parsed)
            if matrix is not None:
                return parsed, matrix, None
    try:
        rows = predictor.adapter.validate_json(body)
    except ValidationError as exc:
        errors = format_errors(exc)
        count = len(errors)
        return [], None, error(400, f"invalid request: {count} error{'s' * (count != 1)}", errors)
    return rows, None, None


def event_time_of(request: Request, settings: Settings) -> datetime:
    """When the rows happened: now, or the X-Event-Time of a replay where the setting allows it."""
    now = datetime.now(UTC)
    header = request.headers.get("x-event-time") if settings.accept_event_time else None
    if header:
        try:
            stamp = datetime.fromisoformat(header)
        except ValueError:
            raise HTTPException(400, "X-Event-Time must be an ISO-8601 date-time") from None
        now = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    request.state.event_time = now
    return now


async def ship_every(log: PredictionLog, seconds: float) -> None:
    """Hand the prediction log's pending requests to its writer, a batch at a time."""
    while True:
        await asyncio.sleep(seconds)
        log.ship()


def open_prediction_log(
    settings: Settings, metrics: ServiceMetrics, logger: logging.Logger
) -> tuple[PredictionLog | None, str]:
    """The started log and its status line for /ready; a database that cannot be reached turns
    logging off (said in /ready and the log), it never stops the service from serving."""
    if not settings.log_predictions:
        return None, "off"
    url = settings.prediction_log_url
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        log = PredictionLog(
            url,
            queue_size=settings.prediction_log_queue,
            log_sensitive=settings.log_sensitive_fields,
            on_drop=metrics.log_dropped.inc,
        ).start()
    except Exception as exc:  # unreachable database, bad URL, permissions: serve without the log
        logger.error("prediction log unavailable: %s", exc)
        return None, f"unavailable: {type(exc).__name__}"
    return log, log.engine.dialect.name


def _predict_openapi_extra(
    contract: InputContract | None, example: list[dict[str, Any]], max_rows: int
) -> dict[str, Any]:
    if contract is None:  # before the model loads, the categories are not known yet
        schema: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
    else:
        schema = contract.adapter(max_rows).json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    logger = logging.getLogger("service")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        app.state.model = load_predictor(settings, logger)
        app.state.prediction_log, app.state.prediction_log_status = open_prediction_log(
            settings, metrics, logger
        )
        shipping = None
        if app.state.prediction_log is not None:
            shipping = asyncio.create_task(ship_every(app.state.prediction_log, SHIP_SECONDS))
        app.openapi_schema = None  # rebuild with the loaded model's categories
        # Objects loaded so far live as long as the process: keep the GC from rescanning them
        # (generation-2 collections were the p99 of large requests, PERF_NOTES.md).
        gc.freeze()
        yield
        # uvicorn has finished every in-flight request by now: drain the log, lose nothing.
        if shipping is not None:
            shipping.cancel()
            app.state.prediction_log.close()
            app.state.prediction_log, app.state.prediction_log_status = None, "closed"

    app = FastAPI(
        title="Adult income classifier",
        version="1.0.0",
        description="Predicts whether income exceeds $50K from census attributes. "
        "Sensitive attributes are accepted and ignored.",
        lifespan=lifespan,
        # No OpenTelemetry from FastAPI: nothing may leave the process (Prometheus is pulled).
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.model = ModelState()
    app.state.prediction_log, app.state.prediction_log_status = None, "starting"
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        access_log=AccessLog(enabled=settings.log_requests),
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error(
            400,
            "invalid request",
            [
                {
                    "row": None,
                    "field": ".".join(map(str, e["loc"])),
                    "message": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors()
            ],
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception(
            "unhandled error", extra={"fields": {"request_id": request.state.request_id}}
        )
        return error(500, "internal error; the request id is in the X-Request-ID header")

    @app.get("/health", summary="Liveness: the process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        summary="Readiness: the model is loaded, verified and warmed up",
        responses={503: {"model": ErrorResponse, "description": "Not ready, with the reason"}},
    )
    async def ready(request: Request, state: Annotated[ModelState, Depends(get_state)]) -> Response:
        if state.predictor is None:
            return error(503, f"not ready: {state.reason}")
        body = {
            "status": "ready",
            "model_version": state.predictor.version,
            "engine": state.predictor.engine,
            "prediction_log": request.app.state.prediction_log_status,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get(
        "/metadata",
        summary="Model version, training metrics, threshold and input schema",
        responses={503: {"model": ErrorResponse}},
    )
    async def metadata(predictor: Annotated[Predictor, Depends(get_predictor)]) -> dict[str, Any]:
        manifest, metrics_json = predictor.bundle.manifest, predictor.bundle.metrics
        return {
            "model_version": predictor.version,
            "git_sha": manifest.get("git_sha"),
            "data_sha256": manifest["data_sha256"],
            "trained_at": manifest["created_at"],
            "engine": predictor.engine,
            "decision_threshold": predictor.threshold,
            "validation_metrics": {
                k: metrics_json[k] for k in ("roc_auc", "pr_auc", "accuracy", "log_loss", "brier")
            },
            "acceptance": metrics_json["acceptance"],
            "input_schema": predictor.contract.describe(),
            "limits": {"max_rows": settings.max_rows, "max_body_bytes": settings.max_body_bytes},
            "links": {"report": "/report", "openapi": "/openapi.json", "docs": "/docs"},
        }

    @app.post(
        "/predict",
        summary="Probability and class for each row, in input order",
        response_model=PredictResponse,
        responses={
            400: {
                "model": ErrorResponse,
                "description": "Invalid rows: every error, with row and field",
            },
            413: {"model": ErrorResponse, "description": "Too many rows or too large a body"},
            415: {"model": ErrorResponse, "description": "Not JSON"},
            503: {"model": ErrorResponse, "description": "Model not loaded"},
        },
        openapi_extra=_predict_openapi_extra(None, [], settings.max_rows),
    )
    async def predict(request: Request) -> Response:
        # No Depends here: resolving dependencies costs ~8% of a one-row request.
        predictor = request.app.state.model.predictor
        if predictor is None:
            return error(503, request.app.state.model.not_loaded)
        event_time_of(request, settings)  # kept in request.state for the prediction log
        body = await read_json_body(request, settings.max_body_bytes)
        rows, matrix, failure = parse_rows(body, predictor, settings.max_rows)
        if failure is not None:
            return failure
        if matrix is not None:
            probabilities = predictor.probabilities(matrix)
        else:
            probabilities = predictor.predict_rows(rows)
        request.state.rows = len(probabilities)
        if request.app.state.prediction_log is not None:  # recorded by the middleware, at the end
            request.state.served = Served.of(
                body, probabilities, predictor.version, predictor.threshold
            )
        metrics.rows.inc(len(probabilities))
        metrics.probabilities.observe_many(probabilities)
        threshold = predictor.threshold
        body_out = {
            "model_version": predictor.version,
            "threshold": threshold,
            "predictions": [
                {"probability": p, "class": int(p >= threshold)} for p in probabilities.tolist()
            ],
        }
        return Response(orjson.dumps(body_out), media_type="application/json")

    @app.post(
        "/monitor",
        summary="The monitoring agent's plan, as JSON (same as the CLI's YAML)",
        response_model=AgentPlan,
        responses={
            400: {"model": ErrorResponse, "description": "Invalid observations"},
            413: {"model": ErrorResponse, "description": "Body too large"},
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

    @app.get(
        "/report",
        summary="The latest model report: one self-contained HTML page",
        response_class=HTMLResponse,
        responses={
            200: {"content": {"text/html": {}}, "description": "The page"},
            404: {
                "description": "No report generated yet",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                },
            },
        },
    )
    async def report() -> Response:
        path = settings.artifacts_dir / REPORT_FILE
        if not path.is_file():
            return error(
                404, f"no report yet: run python -m src.report --artifacts {settings.artifacts_dir}"
            )
        # The page is self-contained: forbid it everything but its own styles and data images.
        policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        return FileResponse(
            path, media_type="text/html", headers={"Content-Security-Policy": policy}
        )

    @app.post(
        "/feedback",
        summary="Ground-truth labels for rows served earlier, by request id and row index",
        response_model=FeedbackResponse,
        responses={
            400: {"model": ErrorResponse, "description": "Invalid labels"},
            413: {"model": ErrorResponse, "description": "Body too large"},
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

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            predictor = app.state.model.predictor
            contract = predictor.contract if predictor else None
            example = predictor.bundle.sample["rows"][:2] if predictor else []
            extra = _predict_openapi_extra(contract, example, settings.max_rows)
            schema["paths"]["/predict"]["post"]["requestBody"] = extra["requestBody"]
            defs = extra["requestBody"]["content"]["application/json"]["schema"].pop("$defs", {})
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
