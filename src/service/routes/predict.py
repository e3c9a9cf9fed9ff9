"""POST /predict: the hot path. No Depends and no per-row Pydantic objects: rows the contract
surely accepts go straight from JSON to a numpy matrix; anything else meets the full validator."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from src.loop.ids import new_request_key
from src.loop.writer import Served
from src.service.body import error, event_time_of, parse_rows, read_json_body
from src.service.models import ErrorResponse, PredictResponse
from src.service.openapi import predict_request_body
from src.settings import Settings


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()
    max_rows, max_body = settings.max_rows, settings.max_body_bytes
    accept_event_time = settings.accept_event_time

    @router.post(
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
        openapi_extra={"requestBody": predict_request_body(None, [], max_rows)},
    )
    async def predict(request: Request) -> Response:
        # No Depends here: resolving dependencies costs ~8% of a one-row request.
        app_state = request.app.state
        predictor = app_state.model.predictor
        if predictor is None:
            return error(503, app_state.model.not_loaded)
        event_time_of(request, accept_event_time)  # kept in request.state for the log
        body = await read_json_body(request, max_body)
        rows, matrix, failure = parse_rows(body, predictor, max_rows)
        if failure is not None:
            return failure
        if matrix is not None:
            probabilities = predictor.probabilities(matrix)
        else:
            probabilities = predictor.predict_rows(rows)
        request.state.rows = len(probabilities)
        key = new_request_key()
        if app_state.prediction_log is not None:  # recorded by the middleware, at the end
            request.state.served = Served.of(
                body, probabilities, predictor.version, predictor.threshold, key
            )
        metrics = app_state.metrics
        metrics.rows.inc(len(probabilities))
        metrics.probabilities.observe_many(probabilities)
        threshold = predictor.threshold
        body_out = {
            "model_version": predictor.version,
            "threshold": threshold,
            "predictions": [
                {"prediction_id": f"{key}-{i:05d}", "probability": p, "class": int(p >= threshold)}
                for i, p in enumerate(probabilities.tolist())
            ],
        }
        return Response(orjson.dumps(body_out), media_type="application/json")

    return router
