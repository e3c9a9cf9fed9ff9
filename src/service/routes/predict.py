"""POST /predict: the hot path, as a plain ASGI app on a plain route.

No FastAPI request handling (dependency solving, a Request object, a Response class): measured,
that machinery cost more than the model itself for one row (docs/performance.md). No per-row
Pydantic objects either: rows the contract surely accepts go straight from JSON to a numpy matrix,
anything else meets the full validator, which gives every error. Errors still leave through the
app's handlers; the OpenAPI entry is written out in src/service/openapi.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson

from src.loop.handoff import Served, column_layout
from src.loop.ids import new_request_key
from src.service.body import error, event_time, parse_rows, read_json_body, request_headers
from src.settings import Settings

SUMMARY = "Probability and class for each row, in input order"
_JSON_HEADER = (b"content-type", b"application/json")


class PredictEndpoint:
    """The ASGI app mounted at POST /predict."""

    path = "/predict"  # what the metrics middleware labels this route with

    def __init__(self, settings: Settings) -> None:
        self.max_rows = settings.max_rows
        self.max_body = settings.max_body_bytes
        self.accept_event_time = settings.accept_event_time
        self.event_time_max_age = timedelta(days=settings.event_time_max_age_days)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = self
        app_state = scope["app"].state
        predictor = app_state.model.predictor
        if predictor is None:
            await error(503, app_state.model.not_loaded)(scope, receive, send)
            return
        headers = request_headers(scope)
        state = scope["state"]  # read back by the middleware, which logs the request
        state["event_time"] = event_time(
            headers.get("x-event-time"), self.accept_event_time, self.event_time_max_age
        )
        body = await read_json_body(headers, receive, self.max_body)
        rows, matrix, failure, columns = parse_rows(body, predictor, self.max_rows)
        if failure is not None:
            await failure(scope, receive, send)
            return
        probabilities = (
            predictor.probabilities(matrix) if matrix is not None else predictor.predict_rows(rows)
        )
        key = new_request_key()
        state["rows"] = len(probabilities)
        log = app_state.prediction_log
        if log is not None:
            served = state["served"] = _hand_off(
                predictor, body, matrix, columns, probabilities, key
            )
            if log.policy == "backpressure":
                # Answered once the log has room for the rows (or the wait timed out, and the
                # middleware's record counts them as dropped).
                await log.wait_for_room(served)
            log.answering(len(probabilities), state["event_time"])
        metrics = app_state.metrics
        metrics.rows.inc(len(probabilities))
        for column, count in predictor.encoder.unknown_counts(rows, columns).items():
            metrics.unknown_values.labels(column).inc(count)
        metrics.probabilities.observe_many(probabilities)
        threshold = predictor.threshold
        payload = orjson.dumps(
            {
                "model_version": predictor.version,
                "threshold": threshold,
                "predictions": [
                    {
                        "prediction_id": f"{key}-{i:05d}",
                        "probability": p,
                        "class": int(p >= threshold),
                    }
                    for i, p in enumerate(probabilities.tolist())
                ],
            }
        )
        length = (b"content-length", str(len(payload)).encode())
        await send(
            {"type": "http.response.start", "status": 200, "headers": [_JSON_HEADER, length]}
        )
        await send({"type": "http.response.body", "body": payload})


def _hand_off(
    predictor: Any,
    body: bytes,
    matrix: Any,
    columns: dict[str, tuple[Any, ...]] | None,
    probabilities: Any,
    key: str,
) -> Served:
    """What the log gets: a batch, the columns it already holds; a few rows, their body."""
    version, threshold = predictor.version, predictor.threshold
    if columns is None:
        return Served.of(body, probabilities, version, threshold, key)
    layout = column_layout(predictor.encoder)
    return Served.of_columns(layout, matrix, columns, probabilities, version, threshold, key)
