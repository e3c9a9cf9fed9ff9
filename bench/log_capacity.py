"""The prediction log's capacity and cost, on SQLite and on PostgreSQL.

1. The writer alone: shipments of 20 requests x 1,000 rows, as the service sends them; rows/s.
2. The service end to end (one worker): 1,000-row requests from wrk for 15 s, with the log on
   (SQLite, PostgreSQL) and off. Rows answered and rows written per second, rows dropped (counted,
   from /metrics), server-side p99 from the service's own access log, the time the log needs to
   catch up once the load stops, and peak RSS of the worker and of its writer.

PostgreSQL is BENCH_DATABASE_URL or TEST_DATABASE_URL (scripts/start_postgres.sh prints one); a
fresh database is made for each run. Without a server the PostgreSQL rows say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text

from bench.common import (
    Uvicorn,
    census_features,
    census_tables,
    percentile,
    process_tree,
    rss_mib,
    table,
    wrk_script,
)
from bench.common import census as load_dataset
from bench.serving import wrk
from src.loop.handoff import Served, column_layout
from src.loop.ids import new_request_key
from src.loop.inserts import BatchWriter
from src.loop.metrics_files import CounterFile
from src.loop.tables import make_engine, upgrade
from src.model.artifacts import load_bundle
from src.model.predictor import Predictor
from src.service.body import parse_rows

FEATURES = census_features()

ROOT = Path(__file__).resolve().parent.parent
STEADY = 40  # 1,000-row requests a second: 40k rows/s offered
POSTGRES = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def fresh_postgres() -> str | None:
    try:
        admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        name = f"bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception:  # no server: said in the results
        return None
    return POSTGRES.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres(url: str) -> None:
    """Drop a database fresh_postgres made (its connections gone first)."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _count(url: str, table_name: str = "predictions") -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text(f"SELECT count(*) FROM {table_name}")).scalar_one()  # noqa: S608
    engine.dispose()
    return count


def writer_alone(url: str, body: bytes, artifacts: Path, *, shipments: int = 15) -> float:
    """Rows/s BatchWriter sustains on shipments of 20 x 1,000-row requests, handed over as the
    service hands batches over: by their columns."""
    engine = make_engine(url)
    upgrade(engine)
    writer = BatchWriter(
        engine, log_sensitive=True, counters=CounterFile(None), tables=census_tables(engine)
    )
    predictor = Predictor(load_bundle(artifacts), engine="booster")
    parsed = parse_rows(body, predictor, 10_000)
    layout = column_layout(predictor.encoder)
    probabilities = np.random.default_rng(0).random(1000)

    def shipment() -> list[tuple[Any, ...]]:
        now = datetime.now(UTC)
        return [
            (
                "bench",
                now,
                "/predict",
                200,
                1.0,
                Served.of_columns(
                    layout,
                    parsed.matrix,
                    parsed.columns,
                    probabilities,
                    "v",
                    0.5,
                    new_request_key(),
                ),
            )
            for _ in range(20)
        ]

    writer.write(shipment(), stop_waiting=lambda: False)  # warm-up
    batches = [shipment() for _ in range(shipments)]
    started = time.perf_counter()
    rows = sum(writer.write(b, stop_waiting=lambda: False) for b in batches)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return rows / elapsed


def _peak_rss(pid: int, stop: threading.Event, peaks: dict[str, float]) -> None:
    while not stop.is_set():
        tree = process_tree(pid)
        for member in tree:
            try:
                rss = rss_mib(member)
            except OSError:
                continue
            role = "worker" if member == pid else "writer"
            if role == "writer" and "resource_tracker" in Path(f"/proc/{member}/cmdline").read_text(
                errors="ignore"
            ):
                continue
            peaks[role] = max(peaks.get(role, 0.0), rss)
        time.sleep(0.2)


def _metric(url: str, prefix: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def _buffered(url: str) -> int:
    with urllib.request.urlopen(f"{url}/ready", timeout=10) as response:
        return json.loads(response.read())["prediction_log"].get("buffered_bytes", 0)


def _hey(url: str, body_file: Path, *, rate: int, seconds: int) -> float:
    """hey at a fixed offered rate (requests/s, over 2 connections); returns answered req/s."""
    out = subprocess.run(
        [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            "2",
            "-q",
            str(rate // 2),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(body_file),
            "-o",
            "csv",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines()[1:] if ",200," in line) / seconds


def end_to_end(
    artifacts: Path,
    script: Path,
    log_url: str | None,
    work: Path,
    *,
    seconds: int = 15,
    rate: int | None = None,
) -> dict[str, Any]:
    env = {"ARTIFACTS_DIR": str(artifacts), "LOG_REQUESTS": "true"}
    env.update({"DATABASE_URL": log_url} if log_url else {"LOG_PREDICTIONS": "false"})
    log_file = work / f"server-{uuid.uuid4().hex[:6]}.log"
    server = Uvicorn("src.app:app", log_file, "/ready", **env)
    try:
        wrk(server.url + "/predict", connections=2, seconds=2, script=script)  # warm-up
        while log_url and _buffered(server.url) > 0:  # the warm-up's rows written first
            time.sleep(0.05)
        written_before = _count(log_url) if log_url else 0
        # The warm-up runs at full speed and may overflow the buffer: count only this phase's drops.
        dropped_before = _metric(server.url, "prediction_log_dropped_rows_total")
        offset = log_file.stat().st_size
        stop, peaks = threading.Event(), {}
        watcher = threading.Thread(target=_peak_rss, args=(server.pid, stop, peaks))
        watcher.start()
        started = time.perf_counter()
        if rate is None:  # as fast as it answers
            rps = wrk(server.url + "/predict", connections=2, seconds=seconds, script=script)
        else:
            rps = _hey(server.url + "/predict", work / "batch.json", rate=rate, seconds=seconds)
        load_end = time.perf_counter()
        catch_up = 0.0
        if log_url:
            while _buffered(server.url) > 0:
                time.sleep(0.05)
            catch_up = time.perf_counter() - load_end
        stop.set()
        watcher.join()
        dropped = _metric(server.url, "prediction_log_dropped_rows_total") - dropped_before
        with log_file.open("rb") as f:
            f.seek(offset)
            served = [
                json.loads(line)["latency_ms"]
                for line in f
                if b'"service.access"' in line and b'"/predict"' in line
            ]
        written = (_count(log_url) - written_before) if log_url else 0
    finally:
        server.stop()
    return {
        "rows_answered_per_s": round(rps * 1000),
        "rows_written_per_s": round(written / (load_end - started + catch_up)) if log_url else None,
        "rows_written": written,
        "rows_dropped": dropped,
        "catch_up_s": round(catch_up, 2),
        "server_p99_ms": round(percentile(served, 0.99), 2) if served else None,
        "peak_rss_worker_mib": round(peaks.get("worker", 0.0)),
        "peak_rss_writer_mib": round(peaks.get("writer", 0.0)),
    }


def run(artifacts: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-log-"))
    frame = load_dataset(ROOT / "data" / "adult_synth.csv").features.head(1000)
    body = frame[list(FEATURES)].to_json(orient="records").encode()
    script = wrk_script(work, "batch", body)
    urls = {"SQLite": f"sqlite:///{work / 'alone.db'}", "PostgreSQL": fresh_postgres()}
    alone = {
        name: (round(writer_alone(url, body, artifacts)) if url else None)
        for name, url in urls.items()
    }
    served = {
        "log off": end_to_end(artifacts, script, None, work),
        "SQLite": end_to_end(artifacts, script, f"sqlite:///{work / 'served.db'}", work),
    }
    postgres = fresh_postgres()
    served["PostgreSQL"] = end_to_end(artifacts, script, postgres, work) if postgres else None
    # At a rate the writer sustains: nothing may be dropped.
    served[f"SQLite at {STEADY} req/s"] = end_to_end(
        artifacts, script, f"sqlite:///{work / 'steady.db'}", work, rate=STEADY
    )
    postgres = fresh_postgres()
    served[f"PostgreSQL at {STEADY} req/s"] = (
        end_to_end(artifacts, script, postgres, work, rate=STEADY) if postgres else None
    )
    return _summary(alone, served)


def _summary(alone: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    off = served["log off"]
    rows = [
        [f"writer alone, {name}", f"{v:,}" if v else "no server", "-", "-", "-", "-", "-", "-"]
        for name, v in alone.items()
    ]
    for name, r in served.items():
        if r is None:
            rows.append([f"service, log on {name}", "no server", "-", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                f"service, {name if name == 'log off' else 'log on ' + name}",
                f"{r['rows_written_per_s']:,}" if r["rows_written_per_s"] else "-",
                f"{r['rows_answered_per_s']:,}",
                f"{r['rows_dropped']:,.0f}",
                f"{r['catch_up_s']}",
                f"{r['server_p99_ms']}",
                f"{r['peak_rss_worker_mib']}",
                f"{r['peak_rss_writer_mib']}",
            ]
        )
    markdown = table(
        [
            "",
            "rows written/s",
            "rows answered/s",
            "rows dropped (counted)",
            "catch-up after load, s",
            "server p99, ms",
            "peak RSS worker, MiB",
            "peak RSS writer, MiB",
        ],
        rows,
    )
    sqlite, pg = served["SQLite"], served.get("PostgreSQL")
    steady = [r for name, r in served.items() if "req/s" in name and r is not None]
    goals = {
        f"nothing dropped at {STEADY}k rows/s offered": all(r["rows_dropped"] == 0 for r in steady),
        "writer alone into SQLite >= 150k rows/s": (alone["SQLite"] or 0) >= 150_000,
        "writer alone into PostgreSQL >= 100k rows/s": (alone["PostgreSQL"] or 0) >= 100_000,
        "worker RSS with the log on (SQLite) within 100 MB of log off": sqlite[
            "peak_rss_worker_mib"
        ]
        - off["peak_rss_worker_mib"]
        <= 100,
    }
    if pg:
        goals["worker RSS with the log on (PostgreSQL) within 100 MB of log off"] = (
            pg["peak_rss_worker_mib"] - off["peak_rss_worker_mib"] <= 100
        )
    return {
        "writer_alone_rows_per_s": alone,
        "served": served,
        "goals": goals,
        "markdown": markdown,
    }
