"""The prediction log's columnar hand-off, its policies when full, and what the monitoring windows
say about the rows it could not keep (issue 25). SQLite and PostgreSQL, real servers where a user
would meet the behaviour.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select

from src import monitor_window
from src.loop.handoff import ColumnLayout, Served, column_layout, epoch_hour
from src.loop.ids import new_request_key
from src.loop.inserts import store_drops
from src.loop.statistics import refresh
from src.loop.tables import (
    MIGRATIONS,
    log_drops_table,
    make_engine,
    upgrade,
)
from src.loop.windows import add_coverage, hourly_points, window_coverage
from src.loop.writer import PredictionLog
from src.model.artifacts import load_bundle
from src.model.predictor import Predictor
from src.monitor_window import load_references
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import FEATURES, adult_log
from tests.conftest import census_predictions as predictions_table
from tests.test_inference import Server
from tests.test_prediction_log import _scraped

T0 = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def predictor(artifacts_dir: Path) -> Predictor:
    return Predictor(load_bundle(artifacts_dir), engine="booster")


def _batch(artifacts_dir: Path) -> list[dict[str, Any]]:
    """Rows of every kind the fast path takes: whole records, a missing nullable category,
    a missing sensitive field, text beyond ASCII."""
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:12]
    rows[1]["workclass"] = None
    rows[2]["race"] = None
    rows[3]["native_country"] = "Côte d’Ivoire ☕"
    rows[4]["sex"] = ""
    return rows


def _logged(url: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    with engine.connect() as connection:
        found = connection.execute(
            select(predictions_table).order_by(predictions_table.c.prediction_id)
        )
        rows = [dict(r._mapping) for r in found]
    engine.dispose()
    return rows


def _stored_values(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in (*FEATURES, "probability", "predicted_class"))


def test_columns_store_exactly_what_the_body_stores(
    database_url: str, predictor: Predictor, artifacts_dir: Path
) -> None:
    rows = _batch(artifacts_dir)
    matrix, columns = predictor.encoder.encode_keeping_columns(rows)
    assert matrix is not None
    assert columns is not None
    probabilities = predictor.probabilities(matrix)
    layout = column_layout(predictor.encoder)
    body = json.dumps(rows).encode()
    log = adult_log(database_url).start()
    by_body = Served.of(body, probabilities, "v1", 0.5, new_request_key())
    by_columns = Served.of_columns(
        layout, matrix, columns, probabilities, "v1", 0.5, new_request_key()
    )
    assert by_columns.size < by_body.size  # the columns hold less than the JSON they came in
    assert log.record("r", T0, "/predict", 200, 1.0, by_body)
    assert log.record("r", T0, "/predict", 200, 1.0, by_columns)
    assert log.flush()
    log.close()
    stored = _logged(database_url)
    first = [
        _stored_values(r) for r in stored if r["prediction_id"].startswith(by_body.request_key)
    ]
    second = [
        _stored_values(r) for r in stored if r["prediction_id"].startswith(by_columns.request_key)
    ]
    assert len(first) == len(second) == len(rows)
    assert first == second
    assert [r["workclass"] for r in stored[:2]] != [None, None]  # values, not all missing
    by_index = {r["prediction_id"]: r for r in stored}
    key = by_columns.request_key
    assert by_index[f"{key}-00001"]["workclass"] is None
    assert by_index[f"{key}-00002"]["race"] is None
    assert by_index[f"{key}-00003"]["native_country"] == "Côte d’Ivoire ☕"
    assert by_index[f"{key}-00004"]["sex"] == ""
    assert by_index[f"{key}-00000"]["age"] == float(rows[0]["age"])


def test_columns_keep_missing_numbers_and_leave_out_sensitive_fields_when_told(
    tmp_path: Path,
) -> None:
    # A nullable numeric is imputed in the matrix; the log keeps None. Fields the request did not
    # send at all are missing; sensitive ones are not kept when the log is told so.
    layout = ColumnLayout(("age",), ("age",), (("workclass", 1, ("Private", None)),))
    matrix = np.array([[38.0, 0.0], [40.0, 1.0], [41.0, np.nan]])  # 40.0: the imputed fill
    columns = {
        "age": (38, None, 41),
        "workclass": ("Private", None, None),
        "sex": ("Female", None, "Male"),
    }
    url = f"sqlite:///{tmp_path / 'p.db'}"
    for sensitive in (True, False):
        log = adult_log(url, log_sensitive=sensitive).start()
        served = Served.of_columns(
            layout, matrix, columns, np.array([0.1, 0.6, 0.9]), "v", 0.5, new_request_key()
        )
        assert log.record("r", T0, "/predict", 200, 1.0, served)
        log.close()
        stored = [r for r in _logged(url) if r["prediction_id"].startswith(served.request_key)]
        assert [r["age"] for r in stored] == [38.0, None, 41.0]
        assert [r["workclass"] for r in stored] == ["Private", None, None]
        assert [r["sex"] for r in stored] == (
            ["Female", None, "Male"] if sensitive else [None, None, None]
        )
        assert [r["education"] for r in stored] == [None] * 3
        assert [r["predicted_class"] for r in stored] == [0, 1, 1]


def test_the_api_logs_a_batch_by_its_columns_with_the_values_sent(
    database_url: str, artifacts_dir: Path, tmp_path: Path
) -> None:
    rows = _batch(artifacts_dir)
    settings = Settings(
        ARTIFACTS_DIR=artifacts_dir,
        DATABASE_URL=database_url,
        PREDICTION_LOG_DIR=tmp_path,
        LOG_REQUESTS=False,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        answer = client.post("/predict", json=rows)
        assert answer.status_code == 200
        assert app.state.prediction_log.flush()
    ids = [p["prediction_id"] for p in answer.json()["predictions"]]
    stored = {r["prediction_id"]: r for r in _logged(database_url)}
    assert sorted(stored) == sorted(ids)
    for prediction, row in zip(answer.json()["predictions"], rows, strict=True):
        logged = stored[prediction["prediction_id"]]
        assert logged["probability"] == prediction["probability"]
        assert logged["predicted_class"] == prediction["class"]
        for name in FEATURES:
            sent = row.get(name)
            assert logged[name] == (float(sent) if isinstance(sent, int) else sent), name


# --- when the buffer is full: drop and count, or wait (bounded) -----------------------------------


def _served(n: int) -> Served:
    body = json.dumps([{"age": 40.0, "workclass": "Private"}] * n).encode()
    return Served.of(body, np.full(n, 0.5), "v1", 0.5, new_request_key())


def test_backpressure_waits_for_room_and_counts_a_wait_that_times_out(tmp_path: Path) -> None:
    dropped: list[tuple[int, str]] = []
    log = adult_log(
        f"sqlite:///{tmp_path / 'p.db'}",
        buffer_bytes=64 * 1024,
        policy="backpressure",
        max_wait=0.2,
        on_drop=lambda rows, reason: dropped.append((rows, reason)),
    )  # not started: nothing frees room unless the test does
    big = _served(100)
    while log.record("r", T0, "/predict", 200, 1.0, big):
        pass
    assert dropped == [(100, "backpressure_timeout")]  # recorded without waiting: counted
    dropped.clear()

    async def wait_then_record(free_after: float | None) -> tuple[bool, float]:
        if free_after is not None:
            asyncio.get_running_loop().call_later(free_after, _empty, log)
        started = time.monotonic()
        room = await log.wait_for_room(big)
        waited = time.monotonic() - started
        log.record("r", T0, "/predict", 200, 1.0, big)
        return room, waited

    room, waited = asyncio.run(wait_then_record(None))
    assert not room
    assert 0.2 <= waited < 5.0  # bounded by max_wait, with room for a busy machine
    assert dropped == [(100, "backpressure_timeout")]
    log.max_wait = 5.0
    room, waited = asyncio.run(wait_then_record(0.05))
    assert room
    assert 0.05 <= waited < 5.0
    assert dropped == [(100, "backpressure_timeout")]  # the room found was kept for it
    assert log.waited_requests == 2
    assert log.buffered_bytes == big.size


def _empty(log: PredictionLog) -> None:
    """What a writer that caught up does to the buffer."""
    log._pending.clear()
    log._pending_bytes = 0


def test_drop_policy_never_waits(tmp_path: Path) -> None:
    log = adult_log(f"sqlite:///{tmp_path / 'p.db'}", buffer_bytes=64 * 1024, max_wait=30.0)
    big = _served(100)
    while log.record("r", T0, "/predict", 200, 1.0, big):
        pass
    started = time.monotonic()
    assert asyncio.run(log.wait_for_room(big)) is True  # no wait: record drops and counts
    assert time.monotonic() - started < 5.0  # a wait would last the 30 s allowed
    assert log.waited_requests == 0


def _post(url: str, rows: list[dict[str, Any]]) -> list[str]:
    request = urllib.request.Request(
        url, data=json.dumps(rows).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return [p["prediction_id"] for p in json.loads(response.read())["predictions"]]


def _ready(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/ready", timeout=10) as response:
        return json.loads(response.read())["prediction_log"]


@pytest.mark.parametrize("policy", ["drop", "backpressure"])
def test_a_stalled_database_drops_and_counts_or_holds_the_requests(
    policy: str, artifacts_dir: Path, tmp_path: Path
) -> None:
    # The database is locked by another writer for a while (SQLite waits up to 30 s for it):
    # the log's 1 MiB buffer fills. Dropping answers at once and counts; backpressure holds each
    # request until there is room, and every answered row is written.
    url = f"sqlite:///{tmp_path / 'p.db'}"
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"]
    batch = (rows * 40)[:1000]
    server = Server(
        artifacts_dir,
        DATABASE_URL=url,
        LOG_REQUESTS="false",
        PREDICTION_LOG_BUFFER_BYTES=str(1024 * 1024),
        PREDICTION_LOG_POLICY=policy,
        PREDICTION_LOG_MAX_WAIT="20",
    )
    try:
        server.wait_ready()
        lock = sqlite3.connect(tmp_path / "p.db", isolation_level=None, check_same_thread=False)
        lock.execute("BEGIN EXCLUSIVE")
        released = threading.Timer(2.0, lambda: lock.execute("COMMIT"))
        released.start()
        started = time.monotonic()
        answered = [i for _ in range(40) for i in _post(f"{server.url}/predict", batch)]
        elapsed = time.monotonic() - started
        released.join()
        deadline = time.monotonic() + 60
        while _ready(server.url)["buffered_bytes"] and time.monotonic() < deadline:
            time.sleep(0.05)
        status = _ready(server.url)
        scraped = _scraped(server.url, 'prediction_log_dropped_rows_total{reason="buffer_full"}')
    finally:
        server.kill()
    logged = {r["prediction_id"] for r in _logged(url)}
    assert status["policy"] == policy
    if policy == "drop":
        assert status["waited_requests"] == 0
        assert status["dropped_rows"] > 0
        assert scraped == status["dropped_rows"]  # counted by reason in /metrics
        assert len(logged) + status["dropped_rows"] == len(answered)  # every row accounted
    else:
        assert elapsed >= 1.5  # the requests waited for the database
        assert status["waited_requests"] > 0
        assert status["dropped_rows"] == 0
        assert logged == set(answered)  # nothing lost


# --- coverage: drops per hour, stored, and what the windows say -----------------------------------


def test_drops_are_stored_per_hour_and_reason_and_add_up_across_processes(
    database_url: str,
) -> None:
    log = adult_log(database_url, buffer_bytes=64 * 1024)  # not started yet: nothing writes
    accepted = sum(log.record("r", T0, "/predict", 200, 1.0, _served(100)) for _ in range(30))
    later = T0 + timedelta(hours=1)
    accepted_later = sum(
        log.record("r", later, "/predict", 200, 1.0, _served(100)) for _ in range(3)
    )
    assert accepted_later == 0
    log.start()
    assert log.flush()
    # A second process's counts for the same hour add to the first's.
    engine = make_engine(database_url)
    counts = {(epoch_hour(T0), "buffer_full"): 7, (epoch_hour(T0), "rejected"): 1}
    assert store_drops(engine, engine.dialect.name, counts)
    log.close()
    with engine.connect() as connection:
        stored = {(r.hour, r.reason): r.rows for r in connection.execute(select(log_drops_table))}
        logged = connection.execute(
            select(func.count()).select_from(predictions_table)
        ).scalar_one()
    engine.dispose()
    assert logged == accepted * 100
    assert stored == {
        (epoch_hour(T0), "buffer_full"): (30 - accepted) * 100 + 7,
        (epoch_hour(T0), "rejected"): 1,
        (epoch_hour(later), "buffer_full"): 300,
    }


def test_rows_a_stopped_writer_never_wrote_are_stored_as_shutdown_drops(tmp_path: Path) -> None:
    """A writer that cannot finish by the end of a graceful stop is killed; the rows it held are
    counted, and the count reaches log_drops (it stopped at /metrics before: the counts rode to
    the writer, which was gone)."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    log = adult_log(url).start()
    assert log.flush()
    os.kill(log.process.pid, signal.SIGSTOP)  # alive, and writing nothing
    for _ in range(3):
        log.record("r", T0, "/predict", 200, 1.0, _served(100))
    log.ship()
    log.close(timeout=0.5)
    engine = make_engine(url)
    with engine.connect() as connection:
        stored = {(r.hour, r.reason): r.rows for r in connection.execute(select(log_drops_table))}
        logged = connection.execute(
            select(func.count()).select_from(predictions_table)
        ).scalar_one()
    engine.dispose()
    assert logged == 0
    assert stored == {(epoch_hour(datetime.now(UTC)), "shutdown"): 300}


def test_rows_the_database_refuses_are_counted_in_their_hour(database_url: str) -> None:
    log = adult_log(database_url).start()
    key = new_request_key()
    body = json.dumps([{"age": 40.0}]).encode()
    for _ in range(2):  # the same prediction id twice: the second is refused
        log.record("r", T0, "/predict", 200, 1.0, Served.of(body, np.zeros(1), "v", 0.5, key))
    assert log.flush()
    log.ship()  # the writer stores its own counts with the next shipment
    log.record("r", T0, "/predict", 200, 1.0, _served(1))
    log.close()
    engine = make_engine(database_url)
    with engine.connect() as connection:
        stored = {(r.hour, r.reason): r.rows for r in connection.execute(select(log_drops_table))}
    engine.dispose()
    assert stored == {(epoch_hour(T0), "rejected"): 1}


def test_windows_report_the_share_of_answered_rows_they_cover(
    database_url: str, artifacts_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = adult_log(database_url, buffer_bytes=64 * 1024)  # not started: the buffer fills
    first_hour, second_hour = T0, T0 + timedelta(hours=1)
    kept = sum(log.record("r", first_hour, "/predict", 200, 1.0, _served(100)) for _ in range(20))
    log.start()
    assert log.flush()
    for _ in range(20):  # the writer keeps up now: the second hour is written whole
        assert log.record("r", second_hour, "/predict", 200, 1.0, _served(100))
        assert log.flush()
    log.close()
    assert 0 < kept < 20
    engine = make_engine(database_url)
    refresh(
        engine,
        load_references(artifacts_dir),
        now=T0 + timedelta(days=3),
        label_delay=timedelta(hours=24),
    )
    points = hourly_points(engine, min_labelled=1)
    report = {
        "window": {"first_hour": first_hour.isoformat(), "last_hour": second_hour.isoformat()}
    }
    add_coverage(engine, points, report)
    whole = window_coverage(
        engine, first_hour=epoch_hour(first_hour), last_hour=epoch_hour(second_hour)
    )
    engine.dispose()
    assert [p["log_coverage"] for p in points] == [kept / 20, 1.0]
    assert whole == report["log_coverage"]
    assert whole == {
        "rows_logged": (kept + 20) * 100,
        "rows_dropped": (20 - kept) * 100,
        "share": round((kept + 20) / 40, 6),
    }
    # The command the loop runs writes the same into its outputs, and says it.
    out = tmp_path / "live"
    arguments = ["--database-url", database_url, "--reference", str(artifacts_dir)]
    arguments += ["--out-dir", str(out), "--min-labelled", "1", "--window-hours", "2"]
    assert monitor_window.main(arguments) == 0
    history = (out / "metrics_history.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in history]
    assert [p["log_coverage"] for p in written] == [kept / 20, 1.0]
    assert json.loads((out / "drift_report.json").read_text())["log_coverage"] == whole
    assert f"the log kept {whole['share']:.1%} of the rows answered" in capsys.readouterr().out


def test_the_coverage_migration_goes_down_and_up_again(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert "log_drops" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "log_drops" in inspect(engine).get_table_names()
    engine.dispose()


def test_every_decision_is_kept_by_default(artifacts_dir: Path) -> None:
    """Under sustained load the log dropped a third of the rows it was handed, by default.
    Bounded backpressure is the default now: a full buffer holds the answer (at most
    PREDICTION_LOG_MAX_WAIT) instead of dropping the decision."""
    from fastapi.testclient import TestClient

    from src.service.factory import create_app
    from src.settings import Settings

    assert Settings().prediction_log_policy == "backpressure"
    with TestClient(create_app(Settings(ARTIFACTS_DIR=artifacts_dir))) as client:
        assert client.get("/ready").json()["prediction_log"]["policy"] == "backpressure"
