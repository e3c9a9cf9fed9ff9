"""The app factory: settings -> a FastAPI app with its lifespan, error handlers and routers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.routing import Route

from src.errors import RefusedError
from src.loop.metrics_files import metrics_dir
from src.loop.tables import upgrade
from src.registry.core import Registry
from src.service.body import error
from src.service.observability import (
    AccessLog,
    RequestContextMiddleware,
    ServiceMetrics,
    configure_logging,
)
from src.service.openapi import install_openapi
from src.service.routes import loop, operations, pages
from src.service.routes.pages import DOCS_ASSETS
from src.service.routes.predict import PredictEndpoint
from src.service.state import (
    ModelState,
    load_predictor,
    open_prediction_log,
    open_registry,
    publish,
    tend,
)
from src.settings import Settings, get_settings

# Swagger UI 5 and its styles, from a pinned package (fastapi-offline, MIT): no CDN.
SWAGGER_UI_FILES = Path(fastapi_offline.__file__).parent / "static"
SHIP_SECONDS = 0.05
DATABASE_RETRY_AFTER_SECONDS = 5  # how often the prediction log's pending requests go to its writer
logger = logging.getLogger("service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and verify the model, open the log; at shutdown drain the log, losing nothing."""
    settings: Settings = app.state.settings
    configure_logging(settings.log_level)
    if settings.log_requests:
        # The service writes its own access line (with request id and rows): uvicorn's would
        # log every request a second time.
        logging.getLogger("uvicorn.access").disabled = True
    folder = metrics_dir(settings.metrics_dir)
    app.state.metrics.attach(folder)
    app.state.registry = None if settings.artifacts_dir is not None else open_registry(settings)
    app.state.reload = asyncio.Event()
    if app.state.registry is not None:
        await asyncio.to_thread(_prepare, app.state.registry)
    app.state.model = await asyncio.to_thread(load_predictor, settings, app.state.registry)
    app.state.prediction_log, app.state.prediction_log_status = _open_log(app.state, folder)
    tending = asyncio.create_task(tend(app.state, SHIP_SECONDS))
    app.openapi_schema = None  # rebuild with the loaded model's categories
    # Objects loaded so far live as long as the process: keep the GC from rescanning them
    # (generation-2 collections were the p99 of large requests: docs/performance.md).
    gc.freeze()
    yield
    # uvicorn has finished every in-flight request by now: drain the log, lose nothing.
    tending.cancel()
    if app.state.prediction_log is not None:
        app.state.prediction_log.close()
        app.state.prediction_log, app.state.prediction_log_status = None, "closed"
    publish(app.state)
    app.state.metrics.detach()
    if app.state.registry is not None:
        app.state.registry.engine.dispose()


def _open_log(state: Any, folder: Path) -> tuple[Any, str]:
    """The log for the served model's dataset. A log that holds another dataset refuses the
    model (one sentence on /ready, 503 on /predict): its decisions would have nowhere to go."""
    predictor = state.model.predictor
    try:
        return open_prediction_log(
            state.settings, state.metrics, folder, predictor.spec if predictor else None
        )
    except RefusedError as exc:
        logger.error("model not served: %s", exc)
        state.model.predictor, state.model.reason = None, str(exc)
        return None, f"refused: {exc}"


def _prepare(registry: Registry) -> None:
    """The registry's tables exist (a fresh database): any failure is said by load_predictor."""
    with contextlib.suppress(Exception):
        upgrade(registry.engine)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as {"detail": ..., "errors"?: [...]}, never a traceback."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        response = error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. WWW-Authenticate on a 401
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {
                "row": None,
                "field": ".".join(map(str, e["loc"])),
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        return error(400, "invalid request", errors)

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        # Stalled, restarting, or its connections cut: the client can retry, and is told so.
        logger.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
        response = error(503, "the database is unavailable right now; retry later")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(InterfaceError, database_unavailable)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception(
            "unhandled error", extra={"fields": {"request_id": request.state.request_id}}
        )
        return error(500, "internal error; the request id is in the X-Request-ID header")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Binary classifier",
        version="1.0.0",
        description="Serves the model its dataset spec describes (the title and fields follow the "
        "loaded model). Sensitive attributes are accepted and ignored.",
        lifespan=lifespan,
        docs_url=None,  # served by the operations router from local files (no CDN)
        redoc_url=None,
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
    app.state.metrics = ServiceMetrics()
    app.state.model = ModelState()
    app.state.prediction_log, app.state.prediction_log_status = None, "starting"
    app.state.registry, app.state.reload = None, asyncio.Event()
    app.add_middleware(
        RequestContextMiddleware,
        metrics=app.state.metrics,
        access_log=AccessLog(enabled=settings.log_requests),
    )
    install_error_handlers(app)
    # The hot path first: routes match in order, and /predict is a plain ASGI route.
    app.router.routes.insert(0, Route("/predict", PredictEndpoint(settings), methods=["POST"]))
    for routes in (operations, loop, pages):
        app.include_router(routes.build_router(settings))
    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_UI_FILES), name="docs-assets")
    install_openapi(app, settings.max_rows)
    return app
