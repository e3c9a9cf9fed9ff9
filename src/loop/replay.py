"""Replay a labelled census stream through the real API, then send the labels back as feedback.

Labels need the service's token: set SERVICE_TOKEN in this command's environment too.
Rows come from adult.test (never seen in training), sampled hour by hour and stamped with event
times (the service must run with ACCEPT_EVENT_TIME=true). The last --shift-hours carry a planted
shift: the population of adult_shifted_sample.csv (older, longer hours, more self-employment) and a
concept change (the income line moved: see moved_income_line). The verdict it calls for: critical
(ROC-AUC far more than 6% below its 7-day median; PR-AUC down, with drift).
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
from typing import Any
from urllib.parse import urlsplit

from src import cli

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
    parser.add_argument(
        "--raw-test", type=Path, default=Path("data/raw/adult.test"), help="rows to replay"
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
    cli.parse_first(build_parser, inputs=("raw_test",))

import numpy as np
import pandas as pd

from src.dataset.adult import plant_shifts, read_uci
from src.dataset.spec import adult_spec
from src.errors import DataError, UnreachableError
from src.fileio import run_cli

_SPEC = adult_spec()
FEATURES, TARGET = _SPEC.features, _SPEC.label.column
NUMERIC = tuple(n for n in FEATURES if _SPEC.column(n).kind == "numeric")


def default_start(now: datetime | None = None) -> datetime:
    """Midnight UTC START_DAYS_AGO days ago: recent enough for the service to accept the event
    times (EVENT_TIME_MAX_AGE_DAYS), old enough that every replayed hour has ended and had its
    labels' day (the statistics' STATS_LABEL_DELAY_HOURS). The same all day, so a replay
    continued with --first-hour lines up (scripts/demo_loop.sh also passes --start)."""
    today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=START_DAYS_AGO)


def moved_income_line(sample: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """The concept change: the income line moved. Husbands without a degree (education_num
    under 13) no longer earn over 50K; people living alone or as a single parent who work 45
    hours or more now do. The old model scores these the other way round (measured: its ROC-AUC
    on shifted rows falls from 0.91 to 0.61), and a model can learn the new line from the inputs
    (0.99 for one trained on 10,000 shifted rows)."""
    labels = labels.copy()
    husband = (sample["relationship"] == "Husband").to_numpy()
    labels[husband & (sample["education_num"] < 13).to_numpy()] = 0
    single = sample["relationship"].isin(["Not-in-family", "Unmarried", "Own-child"]).to_numpy()
    labels[single & (sample["hours_per_week"] >= 45).to_numpy()] = 1
    return labels


def hour_of_traffic(
    pool: pd.DataFrame, rng: np.random.Generator, *, rows: int, shifted: bool
) -> tuple[list[dict[str, Any]], list[int]]:
    """One hour's rows (as a client sends them) and their true labels."""
    sample = pool.iloc[rng.integers(0, len(pool), rows)].reset_index(drop=True)
    labels = sample[TARGET].to_numpy().copy()
    if shifted:
        sample = plant_shifts(sample, rng)
        labels = moved_income_line(sample, labels)
    records = []
    for record in sample[list(FEATURES)].to_dict(orient="records"):
        records.append(
            {k: None if pd.isna(v) else int(v) if k in NUMERIC else v for k, v in record.items()}
        )
    return records, labels.tolist()


def servable(pool: pd.DataFrame, schema: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows whose categories the served model knows: a category its training never saw is a
    400 (the contract), so a replay meant to measure quality leaves those rows out, and says so."""
    keep = np.ones(len(pool), dtype=bool)
    for field in schema:
        if "allowed_values" in field:
            column = pool[field["name"]]
            keep &= (column.isna() | column.isin(field["allowed_values"])).to_numpy()
    if not keep.all():
        print(
            f"  left out {int((~keep).sum())} rows with categories the model never saw",
            file=sys.stderr,
        )
    return pool[keep].reset_index(drop=True)


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
    raw_test: Path,
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
    pool = servable(read_uci(raw_test), client.get("/metadata")["input_schema"])
    rng = np.random.default_rng(seed)
    authority = {"Authorization": f"Bearer {token}"} if token else {}
    sent = labelled = 0
    for hour in range(first_hour, first_hour + hours):
        shifted = hour >= first_hour + hours - shift_hours
        rows, labels = hour_of_traffic(pool, rng, rows=rows_per_hour, shifted=shifted)
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
                raw_test=args.raw_test,
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
