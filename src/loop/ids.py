"""Prediction ids, issued by the server: unique, sortable by time, checkable without a lookup.

An id is the request's key, 12 hex digits of Unix milliseconds and 16 random hex digits (64 bits,
from the OS), then the row: `0193b6f1c2a4` `9f3c0e7a5d2b4e61` `-00042`. Ids of one request share
their key; ids sort by the time they were issued.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta

ROW_DIGITS = 5  # rows per request are capped below 10**5 (settings.PREDICT_MAX_ROWS)
# Matched against the whole string (fullmatch): "$" would also match before a trailing newline.
_ID = re.compile(r"([0-9a-f]{12})[0-9a-f]{16}-[0-9]{5}")
# Issued after this moment, or not by this service (the format is older than any of its ids).
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_CLOCK_SKEW = timedelta(minutes=5)


def new_request_key() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"


def prediction_ids(key: str, rows: int) -> list[str]:
    return [f"{key}-{i:05d}" for i in range(rows)]


def why_never_issued(prediction_id: str, now: datetime) -> str | None:
    """None if this service could have issued the id; else why it could not have."""
    match = _ID.fullmatch(prediction_id)
    if match is None:
        return "not an id this service issues (12+16 hex digits, '-', 5 digits)"
    issued = datetime.fromtimestamp(int(match.group(1), 16) / 1000, UTC)
    if issued < _EPOCH:
        return "issued before this service existed"
    if issued > now + _CLOCK_SKEW:
        return "issued in the future"
    return None
