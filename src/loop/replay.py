"""Replay a labelled stream through the real API, then send the labels back as feedback.

Labels need the service's token: set SERVICE_TOKEN in this command's environment too.
Rows are stamped with event times hour by hour (the service must run with
ACCEPT_EVENT_TIME=true), and the last --shift-hours carry a planted change: a population shift
and a concept change, so the verdict it calls for is critical (ROC-AUC far more than 6% below its
7-day median, with drift). With --data and --spec the rows are that table's holdout and the
change is planted from the spec (src/dataset/shifts.py); without them, the census's rows from
--raw-test (never seen in training) and its own story (an older population whose income line
moved: src/dataset/adult.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from src import cli

if TYPE_CHECKING:
    import numpy as np

    from src.dataset.shifts import ReplaySource

HOURS = 192  # eight days: seven for the monitor's median, one more
SHIFT_HOURS = 24
ROWS_PER_HOUR = 1000
BATCH_ROWS = 500
SEED = 7
START_DAYS_AGO = 11  # the replay's first hour: midnight (UTC) this many days ago


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.loop.replay", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--url", required=True, help="the running service, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument("--data", type=Path, default=None, help="a table to replay (with --spec)")
    parser.add_argument("--spec", type=Path, default=None, help="the table's dataset spec")
    parser.add_argument(
        "--raw-test",
        type=Path,
        default=Path("data/raw/adult.test"),
        help="the census rows to replay (without --spec)",
    )
    parser.add_argument("--hours", type=int, default=HOURS, help="hours of traffic")
    parser.add_argument(
        "--shift-hours", type=int, default=SHIFT_HOURS, help="the last hours, shifted"
    )
    parser.add_argument(
        "--rows-per-hour", type=int, default=ROWS_PER_HOUR, help="rows sent each hour"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="the sampling's seed")
    parser.add_argument(
        "--first-hour", type=int, default=0, help="continue a replay: hours after --start"
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for the service to be ready"
    )
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=None,
        help=f"the first hour, ISO-8601 (None: midnight UTC {START_DAYS_AGO} days ago)",
    )
    return parser


if __name__ == "__main__":  # parse first, import after: --help and a missing file answer at once
    cli.parse_first(build_parser, inputs=("raw_test", "data", "spec"))

import numpy as np

from src.errors import DataError, UnreachableError
from src.fileio import run_cli


def default_start(now: datetime | None = None) -> datetime:
    """Midnight UTC START_DAYS_AGO days ago: recent enough for the service to accept the event
    times (EVENT_TIME_MAX_AGE_DAYS), old enough that every replayed hour has ended and had its
    labels' day (the statistics' STATS_LABEL_DELAY_HOURS). The same all day, so a replay
    continued with --first-hour lines up (scripts/demo_loop.sh also passes --start)."""
    today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=START_DAYS_AGO)


def replay_source(data: Path | None, spec: Path | None, raw_test: Path) -> ReplaySource:
    """The table's rows and planted change (--data and --spec), or the census's."""
    if (data is None) != (spec is None):
        raise DataError("--data and --spec go together (neither: the census's rows)")
    if data is not None and spec is not None:
        from src.dataset.shifts import table_source
        from src.dataset.spec import load_spec

        return table_source(data, load_spec(spec))
    from src.dataset.adult import census_source

    return census_source(raw_test)


def hour_of_traffic(
    source: ReplaySource, rng: np.random.Generator, *, rows: int, shifted: bool, hour: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """One hour's rows (as a client sends them) and their true labels: drawn at random, or the
    next rows in event-time order."""
    if source.ordered:
        picked = (hour * rows + np.arange(rows)) % len(source.features)
    else:
        picked = rng.integers(0, len(source.features), rows)
    sample = source.features.iloc[picked].reset_index(drop=True)
    labels = source.labels[picked].copy()
    if shifted:
        sample, labels = source.shift(sample, labels, rng)
    return source.requests(sample), [int(v) for v in labels]


def servable(source: ReplaySource, schema: list[dict[str, Any]]) -> ReplaySource:
    """The rows whose categories the served model takes: a value outside a domain that rejects
    is a 400 (the contract), so a replay meant to measure quality leaves those rows out, and
    says so."""
    keep = np.ones(len(source.features), dtype=bool)
    for field in schema:
        if "allowed_values" in field and field.get("outside_the_domain") != "missing":
            column = source.features[field["name"]].astype(object)
            allowed = {str(v) for v in field["allowed_values"]}  # a table's codes read as text
            keep &= (column.isna() | column.astype(str).isin(allowed)).to_numpy()
    if not keep.all():
        print(
            f"  left out {int((~keep).sum())} rows with categories the model never saw",
            file=sys.stderr,
        )
    if not keep.any():
        raise DataError("no row of the table is one the served model takes")
    return source.keep(keep)


class Client:
    """Keep-alive JSON over HTTP/1.1 to one host."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise DataError(f"--url must be http://host:port, got {url!r}")
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)

    def _connect(self) -> None:
        if self.connection.sock is None:
            self.connection.connect()
            # http.client writes headers and body separately: without this, Nagle's algorithm
            # and delayed ACKs add ~40 ms to every request.
            self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._connect()
                self.connection.request("GET", "/ready")
                response = self.connection.getresponse()
                response.read()
                if response.status == 200:
                    return
            except OSError:
                self.connection.close()
            if time.monotonic() > deadline:
                raise UnreachableError(
                    f"cannot reach the service at {self.connection.host}:{self.connection.port}"
                    f" (not ready within {seconds:g} s)"
                )
            time.sleep(0.25)

    def wait_written(self, seconds: float) -> None:
        """Until the service's log holds nothing unwritten: what was answered is in the database."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.connection.request("GET", "/ready")
            response = self.connection.getresponse()
            log = json.loads(response.read()).get("prediction_log", {})
            if log.get("buffered_bytes", 0) == 0:
                return
            time.sleep(0.1)
        raise DataError("the service's prediction log did not catch up in time")

    def get(self, path: str) -> dict[str, Any]:
        self._connect()
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        data = json.loads(response.read() or b"{}")
        if response.status != 200:
            raise DataError(f"GET {path} answered {response.status}: {data.get('detail')}")
        return data

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        self._connect()
        self.connection.request(
            "POST", path, payload, {"Content-Type": "application/json", **(headers or {})}
        )
        response = self.connection.getresponse()
        data = json.loads(response.read() or b"{}")
        if response.status != 200:
            raise DataError(f"POST {path} answered {response.status}: {data.get('detail')}")
        return data


def replay(
    url: str,
    *,
    source: ReplaySource,
    hours: int = HOURS,
    shift_hours: int = SHIFT_HOURS,
    rows_per_hour: int = ROWS_PER_HOUR,
    seed: int = SEED,
    wait_seconds: float = 60.0,
    token: str | None = None,
    first_hour: int = 0,
    start: datetime | None = None,
) -> dict[str, int]:
    start = start or default_start()
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    client = Client(url)
    client.wait_ready(wait_seconds)
    source = servable(source, client.get("/metadata")["input_schema"])
    if first_hour == 0 and shift_hours:
        print(f"  the last {shift_hours} hours: {source.shift_text}", file=sys.stderr)
    rng = np.random.default_rng(seed)
    authority = {"Authorization": f"Bearer {token}"} if token else {}
    sent = labelled = 0
    for hour in range(first_hour, first_hour + hours):
        shifted = hour >= first_hour + hours - shift_hours
        rows, labels = hour_of_traffic(source, rng, rows=rows_per_hour, shifted=shifted, hour=hour)
        feedback = []
        for batch, offset in enumerate(range(0, len(rows), BATCH_ROWS)):
            stamp = start + timedelta(hours=hour, minutes=batch)
            answer = client.post(
                "/predict",
                rows[offset : offset + BATCH_ROWS],
                {"X-Request-ID": f"replay-h{hour:04d}-b{batch}", "X-Event-Time": stamp.isoformat()},
            )
            feedback += [
                {"prediction_id": p["prediction_id"], "label": label}
                for p, label in zip(
                    answer["predictions"], labels[offset : offset + BATCH_ROWS], strict=True
                )
            ]
            sent += len(answer["predictions"])
        result = client.post("/feedback", {"labels": feedback}, authority)
        if result["invalid"]:
            raise DataError(f"{len(result['invalid'])} labels were refused: {result['invalid'][0]}")
        labelled += result["stored"] + result["repeated"]
        if (hour + 1) % 24 == 0 or hour == first_hour + hours - 1:
            phase = "shifted" if shifted else "healthy"
            print(f"  replayed hour {hour + 1} ({phase}), {sent:,} rows", file=sys.stderr)
    client.wait_written(wait_seconds)
    return {"rows": sent, "labelled": labelled, "hours": hours, "shift_hours": shift_hours}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if not 0 <= args.shift_hours <= args.hours:
            raise DataError("--shift-hours must be between 0 and --hours")
        try:
            summary = replay(
                args.url,
                token=os.environ.get("SERVICE_TOKEN"),
                first_hour=args.first_hour,
                start=args.start,
                wait_seconds=args.wait,
                source=replay_source(args.data, args.spec, args.raw_test),
                hours=args.hours,
                shift_hours=args.shift_hours,
                rows_per_hour=args.rows_per_hour,
                seed=args.seed,
            )
        except OSError as exc:
            raise UnreachableError(
                f"{args.url}: cannot reach the service ({exc.strerror or exc})"
            ) from None
        print(
            f"replayed {summary['rows']:,} rows over {summary['hours']} hours "
            f"(last {summary['shift_hours']} shifted), {summary['labelled']:,} labels accepted"
        )
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
