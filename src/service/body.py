"""Reading a request: the raw body (bounded, gzip allowed), /predict's rows, the event time; and
the one shape every error response has."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import orjson
from fastapi import HTTPException
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from src.model.contract import format_errors
from src.model.predictor import Predictor

JSON_TYPES = ("application/json", "text/json")
_WANTED_HEADERS = frozenset(
    (b"content-type", b"content-length", b"content-encoding", b"x-event-time")
)


def error(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> Response:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def request_headers(scope: dict[str, Any]) -> dict[str, str]:
    """The headers reading a body needs, from the raw ASGI scope (lower-case names)."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _WANTED_HEADERS
    }


async def read_json_body(headers: dict[str, str], receive: Any, limit: int) -> bytes:
    """The raw body, refused (413) before parsing when over `limit`; gzip is inflated, bounded."""
    content_type = headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type.lower() not in JSON_TYPES:
        raise HTTPException(415, f"Content-Type must be application/json, got '{content_type}'")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        body += message.get("body", b"")
        if len(body) > limit:
            raise HTTPException(413, f"body exceeds the limit of {limit} bytes")
        if not message.get("more_body", False):
            break
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        return _inflate(bytes(body), limit)
    if encoding != "identity":
        raise HTTPException(
            415, f"Content-Encoding '{encoding}' is not supported (use gzip or none)"
        )
    return bytes(body)


def _inflate(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise HTTPException(
            400, "Content-Encoding is gzip but the body is not valid gzip"
        ) from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise HTTPException(413, f"inflated body exceeds the limit of {limit} bytes")
    return inflated


class ParsedRows(NamedTuple):
    rows: list[dict[str, Any]]
    matrix: np.ndarray | None  # the fast path's encoded rows, or None
    failure: Response | None  # the error response, or None
    columns: dict[str, tuple[Any, ...]] | None = None  # the fast path's raw columns (batches)


def parse_rows(body: bytes, predictor: Predictor, max_rows: int) -> ParsedRows:
    """(rows, encoded matrix from the fast path or None, None, raw columns or None) or
    (_, _, the error response, _)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None  # the validator below reports it, with position
    if type(parsed) is list:
        if not parsed:
            empty = "the body is an empty list; send at least one row"
            return ParsedRows([], None, error(400, empty))
        if len(parsed) > max_rows:
            too_many = f"{len(parsed)} rows exceed the limit of {max_rows} per request"
            return ParsedRows([], None, error(413, too_many))
        if predictor.engine != "pipeline":
            matrix, columns = predictor.encoder.encode_keeping_columns(parsed)
            if matrix is not None:
                return ParsedRows(parsed, matrix, None, columns)
    try:
        rows = predictor.adapter.validate_json(body)
    except ValidationError as exc:
        errors = format_errors(exc, predictor.spec, predictor.contract.nullable)
        count = len(errors)
        message = f"invalid request: {count} error{'s' * (count != 1)}"
        return ParsedRows([], None, error(400, message, errors))
    return ParsedRows(rows, None, None)


EVENT_TIME_AHEAD = timedelta(minutes=5)  # clock skew a client may have


def event_time(header: str | None, accept_header: bool, max_age: timedelta) -> datetime:
    """When the rows happened: now, or the X-Event-Time of a replay where the setting allows it,
    within [now - max_age, now + 5 min]: one row stamped years ago would make the statistics
    compute every hour in between."""
    now = datetime.now(UTC)
    if not (header and accept_header):
        return now
    try:
        stamp = datetime.fromisoformat(header)
    except ValueError:
        raise HTTPException(400, "X-Event-Time must be an ISO-8601 date-time") from None
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    if not now - max_age <= stamp <= now + EVENT_TIME_AHEAD:
        raise HTTPException(
            400,
            f"X-Event-Time {stamp.isoformat()} is outside [now - {max_age.days} days, now + 5 "
            "minutes] (EVENT_TIME_MAX_AGE_DAYS)",
        )
    return stamp
