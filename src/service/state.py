"""What the lifespan loads and the routes read: the verified model and the prediction log."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from src.artifacts import load_bundle
from src.errors import ArtifactError
from src.loop.writer import PredictionLog
from src.predictor import Predictor
from src.service.observability import ServiceMetrics
from src.settings import Settings

logger = logging.getLogger("service")


class ModelState:
    """What the lifespan loaded: a verified predictor, or the reason there is none."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.reason = "starting"

    @property
    def not_loaded(self) -> str:
        return f"model not loaded: {self.reason}"


def load_predictor(settings: Settings) -> ModelState:
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


def open_prediction_log(
    settings: Settings, metrics: ServiceMetrics, metrics_dir: Path
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
            buffer_bytes=settings.prediction_log_buffer_bytes,
            log_sensitive=settings.log_sensitive_fields,
            metrics_dir=str(metrics_dir),
            on_drop=metrics.drop,
        ).start()
    except Exception as exc:  # unreachable database, bad URL, permissions: serve without the log
        logger.error("prediction log unavailable: %s", exc)
        return None, f"unavailable: {type(exc).__name__}: {exc}"[:300]
    return log, "up"


def log_status(app_state: Any) -> dict[str, Any]:
    """The prediction log as /ready shows it: its database and its real state right now."""
    log: PredictionLog | None = app_state.prediction_log
    if log is None:
        return {"state": app_state.prediction_log_status}
    return {
        "backend": log.engine.dialect.name,
        "state": log.state,
        "buffered_bytes": log.buffered_bytes,
        "dropped_rows": log.dropped_rows,
        "writer_restarts": log.restarts,
    }


async def tend(app_state: Any, seconds: float, export_every: int = 10) -> None:
    """Every `seconds`: ship the log's pending requests to its writer, restart a writer that
    died; every `export_every` ticks, publish this worker's metrics for /metrics to add up."""
    for tick in itertools.count():
        await asyncio.sleep(seconds)
        log: PredictionLog | None = app_state.prediction_log
        if log is not None:
            log.ship()
            log.check()
        if tick % export_every == 0:
            publish(app_state)


def publish(app_state: Any) -> None:
    metrics: ServiceMetrics = app_state.metrics
    log: PredictionLog | None = app_state.prediction_log
    metrics.model_ready.set(app_state.model.predictor is not None)
    metrics.log_up.set(log is not None and log.state == "up")
    metrics.log_buffered.set(log.buffered_bytes if log is not None else 0)
    metrics.export()


# Dependencies are async on purpose: FastAPI runs sync ones in a thread pool, which costs more
# than a whole single-row prediction. /predict uses none at all (see routes/predict.py).
async def get_state(request: Request) -> ModelState:
    return request.app.state.model


async def get_predictor(state: Annotated[ModelState, Depends(get_state)]) -> Predictor:
    if state.predictor is None:
        raise HTTPException(status_code=503, detail=state.not_loaded)
    return state.predictor
