"""Where one single-row /predict spends its CPU, stage by stage, in-process (no network).

The whole request is the service's own ASGI app called directly, as uvicorn calls it; each stage
is the same code timed alone on the same row. What the stages do not cover is the ASGI plumbing
(routing, exception middleware, the lifespan's state). hello-world FastAPI is timed the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import table

ROUNDS, CALLS = 5, 3000


def _cpu_us(call: Callable[[], Any]) -> float:
    """Median over rounds of CPU microseconds per call."""
    for _ in range(CALLS // 10):
        call()
    samples = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CALLS):
            call()
        samples.append((time.process_time() - started) / CALLS * 1e6)
    return statistics.median(samples)


def _asgi_cpu_us(app: Any, path: str, body: bytes, loop: asyncio.AbstractEventLoop) -> float:
    """Median over rounds of CPU microseconds per request, CALLS requests per event-loop run."""
    once = _asgi_request(app, path, body)

    async def many(n: int) -> None:
        for _ in range(n):
            await once()

    loop.run_until_complete(many(CALLS // 10))
    samples = []
    for _ in range(ROUNDS):
        started = time.process_time()
        loop.run_until_complete(many(CALLS))
        samples.append((time.process_time() - started) / CALLS * 1e6)
    return statistics.median(samples)


def _asgi_request(app: Any, path: str, body: bytes) -> Callable[[], Any]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def once() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            return None

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST" if body else "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers if body else [],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "app": app,
        }
        await app(scope, receive, send)

    return once


def run(artifacts: Path) -> dict[str, Any]:
    os.environ.update(
        ARTIFACTS_DIR=str(artifacts),
        LOG_REQUESTS="true",
        PREDICTION_LOG_DIR=tempfile.mkdtemp(prefix="bench-profile-"),
    )
    from bench.hello_app import app as hello
    from src.service.factory import create_app
    from src.settings import Settings

    app = create_app(Settings())
    row = json.loads((artifacts / "sample_rows.json").read_text())["rows"][0]
    body = json.dumps([row]).encode()
    loop = asyncio.new_event_loop()
    # The service writes its access lines to stdout, as deployed: thousands of them here, sent
    # to /dev/null (as the bare middleware's are) so that the bench's own output stays readable.
    saved_stdout = os.dup(1)
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    try:
        timed, total = _measure(app, body, loop)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    hello_total = _asgi_cpu_us(hello, "/hello", b"", loop)
    loop.close()
    return _summary(timed, total, hello_total)


def _measure(
    app: Any, body: bytes, loop: asyncio.AbstractEventLoop
) -> tuple[dict[str, float], float]:
    """CPU us of each stage of one single-row request alone, and of the whole request."""
    from fastapi.testclient import TestClient

    from src.loop.ids import new_request_key
    from src.loop.writer import Served
    from src.service.body import parse_rows
    from src.service.observability import AccessLog, RequestContextMiddleware

    with TestClient(app):  # the lifespan: model loaded, log open
        state = app.state
        predictor, log, metrics = state.model.predictor, state.prediction_log, state.metrics
        parsed = orjson.loads(body)
        matrix = predictor.encoder.encode(parsed)
        probabilities = predictor.probabilities(matrix)
        now = datetime.now(UTC)

        async def nothing(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        bare = RequestContextMiddleware(
            nothing, metrics=metrics, access_log=AccessLog(os.open(os.devnull, os.O_WRONLY))
        )
        stages = {
            "body: parse JSON (orjson)": lambda: orjson.loads(body),
            "contract + encoder (the fast path's checks and codes)": lambda: (
                predictor.encoder.encode(parsed)
            ),
            "trees (compiled, 1 row)": lambda: predictor.probabilities(matrix),
            "parse_rows (the three above with the row-count checks)": lambda: parse_rows(
                body, predictor, 10_000
            ),
            "prediction id": new_request_key,
            "response (dict + orjson)": lambda: orjson.dumps(
                {
                    "model_version": predictor.version,
                    "threshold": 0.5,
                    "predictions": [
                        {"prediction_id": "k-00000", "probability": p, "class": int(p >= 0.5)}
                        for p in probabilities.tolist()
                    ],
                }
            ),
            "metrics (rows, probability histogram)": lambda: (
                metrics.rows.inc(1),
                metrics.probabilities.observe_many(probabilities),
            ),
            "log hand-off (Served + one append)": lambda: log.record(
                "r",
                now,
                "/predict",
                200,
                1.0,
                Served.of(body, probabilities, "v", 0.5, new_request_key()),
            ),
        }
        timed = {
            "middleware (request id, metrics, access line)": _asgi_cpu_us(bare, "/x", b"", loop)
        }
        timed.update({name: _cpu_us(call) for name, call in stages.items()})
        log.ship()  # what the hand-off stage queued
        total = _asgi_cpu_us(app, "/predict", body, loop)
    return timed, total


def _summary(timed: dict[str, float], total: float, hello_total: float) -> dict[str, Any]:
    covered = sum(v for k, v in timed.items() if not k.startswith("parse_rows"))
    rows = [[name, f"{us:.1f}", f"{us / total:.0%}"] for name, us in timed.items()]
    rows.append(
        [
            "the rest, by difference: framework middleware and routing, body read, answer sent",
            f"{total - covered:.1f}",
            f"{(total - covered) / total:.0%}",
        ]
    )
    rows.append(["**one single-row /predict, in-process**", f"**{total:.1f}**", "100%"])
    rows.append(
        ["hello-world FastAPI, in-process", f"{hello_total:.1f}", f"{hello_total / total:.0%}"]
    )
    return {
        "stages_us": timed,
        "total_us": total,
        "hello_us": hello_total,
        "goals": {},
        "markdown": table(["stage", "CPU us", "share"], rows),
    }
