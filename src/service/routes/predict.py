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
from urllib.parse import parse_qs

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
        reasons, failure = reasons_asked(scope["query_string"], predictor)
        if failure is not None:
            await failure(scope, receive, send)
            return
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
        predictions = [
            {"prediction_id": f"{key}-{i:05d}", "probability": p, "class": int(p >= threshold)}
            for i, p in enumerate(probabilities.tolist())
        ]
        if reasons:
            explained = explain(predictor, rows, matrix, reasons)
            for prediction, (base, top) in zip(predictions, explained, strict=True):
                prediction["base_value"] = base
                prediction["reasons"] = top
        payload = orjson.dumps(
            {"model_version": predictor.version, "threshold": threshold, "predictions": predictions}
        )
        length = (b"content-length", str(len(payload)).encode())
        await send(
            {"type": "http.response.start", "status": 200, "headers": [_JSON_HEADER, length]}
        )
        await send({"type": "http.response.body", "body": payload})


def reasons_asked(query: bytes, predictor: Any) -> tuple[int, Any]:
    """`?reasons=K`: (K, None), or (0, the 400 response) when K is not an integer from 0 to the
    number of model inputs. Other query parameters are ignored, as FastAPI ignores them."""
    if not query:  # the plain request: no query to parse
        return 0, None
    values = parse_qs(query.decode("latin-1"), keep_blank_values=True).get("reasons")
    if not values:
        return 0, None
    most = len(predictor.spec.model_inputs)
    text = values[-1]
    if not (text.isascii() and text.isdigit()) or int(text) > most:
        message = f"reasons must be an integer from 0 to {most}; got {text[:20]!r}"
        where = {"row": None, "field": "reasons", "message": message, "type": "query"}
        return 0, error(400, message, [where])
    return int(text), None


def explain(
    predictor: Any, rows: list[dict[str, Any]], matrix: Any, k: int
) -> list[tuple[float, list[dict[str, Any]]]]:
    """Each row's base value and its k largest exact contributions (src/model/reasons.py)."""
    from src.model.reasons import top_reasons

    if matrix is None:
        matrix = predictor.encoder.encode(rows)
    explainer = predictor.explainer.get()
    return top_reasons(explainer.contributions(matrix), explainer.names, rows, k)


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
