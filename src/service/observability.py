"""Request IDs, one structured log line per request, and Prometheus metrics, as ASGI middleware."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from src.loop.metrics_files import HELP, MetricFiles, export, forget_me, forget_the_dead

REQUEST_ID_HEADER = "x-request-id"
# A client's request id is echoed only if it is short and plain; anything else gets a fresh one,
# so ids cannot smuggle newlines or megabytes into logs.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # fullmatch: "$" allows "\n"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROBABILITY_EDGES = np.linspace(0.0, 1.0, 11)[1:]  # upper bounds 0.1 .. 1.0
_EDGE_LIST = PROBABILITY_EDGES.tolist()


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> logging.Logger:
    """JSON lines on stderr for the service's logger (called at startup, never at import)."""
    logger = logging.getLogger("service")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())
    return logger


class ProbabilityHistogram(Collector):
    """Predicted probabilities, counted a whole batch at a time with numpy: observing 1,000 rows
    one by one through prometheus_client's Histogram would cost ~1.5 ms per request."""

    def __init__(self) -> None:
        self._counts = np.zeros(len(PROBABILITY_EDGES), dtype=np.int64)
        self._sum = 0.0

    def observe_many(self, probabilities: np.ndarray) -> None:
        if len(probabilities) < 16:  # numpy's per-call overhead outweighs a short loop
            for p in probabilities.tolist():
                self._counts[min(bisect_left(_EDGE_LIST, p), len(_EDGE_LIST) - 1)] += 1
                self._sum += p
            return
        index = np.searchsorted(PROBABILITY_EDGES, probabilities, side="left")
        index = np.minimum(index, len(_EDGE_LIST) - 1)
        self._counts += np.bincount(index, minlength=len(_EDGE_LIST))
        self._sum += float(probabilities.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = np.cumsum(self._counts)
        buckets = [
            (f"{edge:.1f}", int(c)) for edge, c in zip(PROBABILITY_EDGES, cumulative, strict=True)
        ]
        buckets[-1] = ("+Inf", int(cumulative[-1]))
        family = HistogramMetricFamily(
            "predicted_probability", "Predicted probability of the positive class, per row."
        )
        family.add_metric([], buckets, self._sum)
        yield family


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, in seconds, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "predicted_rows", "Rows /predict answered with a probability.", registry=self.registry
        )
        self.log_dropped = Counter(
            "prediction_log_dropped_rows",
            HELP["prediction_log_dropped_rows"],
            ["reason"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "model_ready", "1 while this worker serves a verified model.", registry=self.registry
        )
        self.log_up = Gauge(
            "prediction_log_up",
            "1 while this worker's prediction log writer is up; 0 while it is down or off.",
            registry=self.registry,
        )
        self.log_unwritten = Gauge(
            "prediction_log_unwritten_seconds",
            "Age of the oldest rows this worker handed to its log writer and not yet written "
            "(0 when all are written): grows while the database stalls.",
            registry=self.registry,
        )
        self.workers_replaced = Counter(
            "service_workers_replaced",
            "Workers of this server found dead (killed, crashed), by a sibling within a "
            "second or by the worker started in their place; each death counted once.",
            registry=self.registry,
        )
        self.log_buffered = Gauge(
            "prediction_log_buffered_bytes",
            "Bytes this worker's log holds in memory, waiting to be written.",
            registry=self.registry,
        )
        self.unknown_values = Counter(
            "served_unknown_values",
            "Values outside a categorical column's domain that /predict served as missing (the "
            "spec's `unknown: missing`), by column.",
            ["column"],
            registry=self.registry,
        )
        self.probabilities = ProbabilityHistogram()
        self.registry.register(self.probabilities)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.files = MetricFiles(None)  # attached to the run's folder in the lifespan

    def attach(self, folder: Path) -> None:
        self.files = MetricFiles(folder)
        self.export()  # at once: a dead sibling is counted before the model has loaded

    def detach(self) -> None:
        """At a clean exit: this worker's gauges go (only a worker that died leaves some)."""
        forget_me(self.files)

    def export(self) -> None:
        """This worker's numbers into the run's folder, where a scrape adds up all workers; a
        sibling that died is counted here, not only by its replacement (which uvicorn's
        supervisor may start seconds later)."""
        if self.files.folder is not None:
            self.workers_replaced.inc(forget_the_dead(self.files.folder))
        export(self.registry, self.files)

    def drop(self, rows: int, reason: str) -> None:
        self.log_dropped.labels(reason).inc(rows)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        # labels() costs a lock and a tuple hash; cache the children per (endpoint, status).
        children = self._children.get((endpoint, status))
        if children is None:
            children = (self.requests.labels(endpoint, str(status)), self.latency.labels(endpoint))
            self._children[(endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)


class AccessLog:
    """One JSON line per request, written to stderr with a single os.write (atomic for lines
    under PIPE_BUF, so workers never interleave). The `logging` machinery cost 14% of a one-row
    /predict; this costs about 1%. Request bodies are never logged: no row values."""

    def __init__(self, fd: int | None = None, *, enabled: bool = True) -> None:
        self.fd = 2 if fd is None else fd
        self.enabled = enabled

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        entry = {"ts": now, "level": "info", "logger": "service.access", "message": "request"}
        entry.update(fields)
        with contextlib.suppress(OSError):  # a closed or full stderr must never fail a request
            os.write(self.fd, orjson.dumps(entry) + b"\n")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return os.urandom(16).hex()  # a fresh id: 128 random bits, as a uuid4's hex without the object


class RequestContextMiddleware:
    """Pure ASGI (BaseHTTPMiddleware would cost more than the model): request id in and out,
    metrics, and one log line per request with id, path, status, rows and latency."""

    def __init__(
        self, app: Callable[..., Any], *, metrics: ServiceMetrics, access_log: AccessLog
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                message["headers"] = [
                    *message.get("headers", []),
                    header,
                    (b"server-timing", f"app;dur={elapsed_ms:.3f}".encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", "other")
            self.metrics.observe_request(endpoint, status, seconds)
            log = getattr(scope.get("app"), "state", None)
            log = getattr(log, "prediction_log", None)
            if log is not None and endpoint == "/predict":
                log.record(
                    request_id,
                    state.get("event_time") or datetime.now(UTC),
                    endpoint,
                    status,
                    seconds * 1000,
                    state.get("served"),
                )
            self.access_log.write(
                {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": endpoint,
                    "status": status,
                    "rows": state.get("rows"),
                    "latency_ms": round(seconds * 1000, 3),
                }
            )
