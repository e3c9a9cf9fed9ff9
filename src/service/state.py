"""What the lifespan loads and the routes read: the verified model and the prediction log."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

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
    settings: Settings, metrics: ServiceMetrics
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


async def ship_every(log: PredictionLog, seconds: float) -> None:
    """Hand the prediction log's pending requests to its writer, a batch at a time."""
    while True:
        await asyncio.sleep(seconds)
        log.ship()


# Dependencies are async on purpose: FastAPI runs sync ones in a thread pool, which costs more
# than a whole single-row prediction. /predict uses none at all (see routes/predict.py).
async def get_state(request: Request) -> ModelState:
    return request.app.state.model


async def get_predictor(state: Annotated[ModelState, Depends(get_state)]) -> Predictor:
    if state.predictor is None:
        raise HTTPException(status_code=503, detail=state.not_loaded)
    return state.predictor
