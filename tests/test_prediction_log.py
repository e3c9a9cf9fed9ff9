"""The loop: the prediction log (SQLite and PostgreSQL), feedback, hourly aggregation, the replay.

PostgreSQL tests use TEST_DATABASE_URL (scripts/start_postgres.sh prints it; .ci/run sets it) and
skip, saying why, where no server answers.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from src import agent_monitor, monitor_window
from src.loop import replay, windows
from src.loop.feedback import record_feedback
from src.loop.tables import feedback_table, make_engine, predictions_table, requests_table
from src.loop.writer import PredictionLog, Served
from tests.conftest import DATA
from tests.test_inference import Server, http

POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _postgres_database() -> Iterator[str]:
    try:
        admin = create_engine(
            POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:
        reason = f"no PostgreSQL at {POSTGRES_URL!r} ({type(exc).__name__})"
        pytest.skip(f"{reason}; scripts/start_postgres.sh starts one")
    name = f"test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'predictions.db'}"
    else:
        yield from _postgres_database()


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def _rows(n: int, age: float = 40.0) -> list[dict[str, Any]]:
    return [{"age": age + i, "workclass": "Private", "sex": "Female"} for i in range(n)]


def _served(rows: list[dict[str, Any]], probabilities: Any) -> Served:
    return Served.of(json.dumps(rows).encode(), np.asarray(probabilities, dtype=float), "v1", 0.5)


def _record(
    log: PredictionLog,
    request_id: str,
    ts: datetime,
    rows: list[dict[str, Any]],
    probabilities: Any,
    latency: float = 1.5,
) -> bool:
    return log.record(request_id, ts, "/predict", 200, latency, _served(rows, probabilities))


def test_every_row_and_request_is_written(database_url: str) -> None:
    log = PredictionLog(database_url).start()
    for i in range(20):
        _record(log, f"r{i}", T0, _rows(5), np.full(5, 0.7))
        if i % 7 == 0:
            log.ship()  # several batches, as the service ships them
    assert log.flush()
    engine = make_engine(database_url)
    assert _count(engine, predictions_table) == 100
    assert _count(engine, requests_table) == 20
    with engine.connect() as connection:
        row = (
            connection.execute(
                select(predictions_table)
                .where(predictions_table.c.request_id == "r3")
                .order_by(predictions_table.c.row_index)
            )
            .mappings()
            .first()
        )
    assert (row["age"], row["workclass"], row["sex"], row["predicted_class"]) == (
        40.0,
        "Private",
        "Female",
        1,
    )
    assert row["education"] is None  # not sent: stored as missing
    log.close()
    engine.dispose()


def test_sensitive_fields_can_be_left_out(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    log = PredictionLog(url, log_sensitive=False).start()
    _record(log, "r", T0, _rows(2), [0.1, 0.9])
    log.close()
    engine = make_engine(url)
    with engine.connect() as connection:
        sexes = connection.execute(select(predictions_table.c.sex)).scalars().all()
    assert sexes == [None, None]


def test_a_full_queue_drops_counts_and_never_blocks(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = PredictionLog(
        f"sqlite:///{tmp_path / 'p.db'}", queue_size=2, max_batches=2, on_drop=dropped.append
    )
    # Not started: nothing drains the queue, as when the database is slower than the traffic.
    started = time.perf_counter()
    results = [_record(log, "r", T0, _rows(3), np.zeros(3)) for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert dropped == [3, 3, 3]
    # The pending list is full: this request is dropped; shipping empties the list (batch 1).
    assert not _record(log, "r", T0, _rows(3), np.zeros(3))
    log.ship()
    for _ in range(3):  # batch 2 fits the queue (2 batches); batches 3 and 4 are dropped whole
        assert _record(log, "r", T0, _rows(3), np.zeros(3))
        log.ship()
    assert time.perf_counter() - started < 1.0
    assert log.dropped_rows == 3 * 3 + 3 + 2 * 3


def test_feedback_is_idempotent_and_reports_unknown_keys(database_url: str) -> None:
    log = PredictionLog(database_url).start()
    _record(log, "a", T0, _rows(3), [0.2, 0.6, 0.9])
    log.close()
    engine = make_engine(database_url)
    labels = [("a", 0, 0), ("a", 2, 1), ("a", 7, 1), ("ghost", 0, 1)]
    assert record_feedback(engine, labels) == (2, [("a", 7), ("ghost", 0)])
    assert record_feedback(engine, labels) == (2, [("a", 7), ("ghost", 0)])  # again: same state
    assert _count(engine, feedback_table) == 2
    record_feedback(engine, [("a", 0, 1)])  # a corrected label replaces the old one
    with engine.connect() as connection:
        stored = dict(
            connection.execute(select(feedback_table.c.row_index, feedback_table.c.label)).all()
        )
    assert stored == {0: 1, 2: 1}
    engine.dispose()


def test_hourly_aggregation_matches_a_hand_computation(database_url: str) -> None:
    rng = np.random.default_rng(3)
    log = PredictionLog(database_url).start()
    truth = []
    for hour in range(3):
        for batch in range(2):
            request_id = f"h{hour}b{batch}"
            ts = T0 + timedelta(hours=hour, minutes=10 * batch)
            probabilities = rng.random(50)
            labels = rng.integers(0, 2, 50)
            _record(log, request_id, ts, _rows(50), probabilities, latency=2.0 + hour + batch)
            truth += [
                (hour, request_id, i, p, y)
                for i, (p, y) in enumerate(zip(probabilities, labels, strict=True))
            ]
        log.record(f"bad{hour}", T0 + timedelta(hours=hour, minutes=30), "/predict", 400, 0.5)
    log.close()
    engine = make_engine(database_url)
    # Label all of hours 0 and 1; leave hour 2 without labels (it must give no point).
    record_feedback(engine, [(r, i, int(y)) for hour, r, i, _, y in truth if hour < 2])
    points = windows.hourly_points(windows.read_labelled(engine), windows.read_requests(engine))
    engine.dispose()
    assert [p["ts"] for p in points] == [(T0 + timedelta(hours=h)).isoformat() for h in (0, 1)]
    frame = pd.DataFrame(truth, columns=["hour", "request_id", "row", "p", "y"])
    for hour, point in enumerate(points):
        rows = frame[frame["hour"] == hour]
        assert point["roc_auc"] == round(roc_auc_score(rows["y"], rows["p"]), 4)
        assert point["pr_auc"] == round(average_precision_score(rows["y"], rows["p"]), 4)
        assert point["acc"] == round(float(((rows["p"] >= 0.5).astype(int) == rows["y"]).mean()), 4)
        assert point["latency_p95_ms"] == round(
            float(np.percentile([2.0 + hour, 3.0 + hour, 0.5], 95)), 2
        )
        assert point["error_rate"] == round(1 / 3, 4)
        assert point["rows"] == 100


# --- the real service --------------------------------------------------------------------


def _post(url: str, rows: list[dict[str, Any]], request_id: str) -> int:
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(rows).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # refused: the server is shutting down


def test_nothing_answered_is_lost_across_a_graceful_shutdown_under_load(
    artifacts_dir: Path, database_url: str
) -> None:
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:10]
    server = Server(artifacts_dir, DATABASE_URL=database_url)
    server.wait_ready()
    answered: list[int] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            if _post(f"{server.url}/predict", rows, f"w{worker}-{i}") == 200:
                answered.append(len(rows))

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)  # under load ...
        server.process.send_signal(signal.SIGTERM)  # ... shut down
        server.process.wait(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if server.process.poll() is None:
            server.process.kill()
    engine = make_engine(database_url)
    logged = _count(engine, predictions_table)
    engine.dispose()
    assert sum(answered) > 500
    assert logged == sum(answered)


def test_the_replay_ends_in_the_verdict_its_shift_calls_for(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    server = Server(artifacts_dir, DATABASE_URL=url, ACCEPT_EVENT_TIME="true")
    try:
        server.wait_ready()
        summary = replay.replay(server.url, raw_test=DATA / "raw" / "adult.test", rows_per_hour=200)
        assert summary["labelled"] == summary["rows"] == 192 * 200
        live = tmp_path / "live"
        assert (
            monitor_window.main(
                ["--database-url", url, "--reference", str(artifacts_dir), "--out-dir", str(live)]
            )
            == 0
        )
        status, plan_json = http(
            "POST",
            f"{server.url}/monitor",
            {
                "metrics": [
                    json.loads(line)
                    for line in (live / "metrics_history.jsonl").read_text().splitlines()
                ],
                "drift": json.loads((live / "drift_report.json").read_text()),
            },
        )
    finally:
        server.process.kill()
    assert status == 200
    assert (
        agent_monitor.main(
            [
                "--metrics",
                str(live / "metrics_history.jsonl"),
                "--drift",
                str(live / "drift_report.json"),
                "--out",
                str(tmp_path / "plan.yaml"),
            ]
        )
        == 0
    )
    plan = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    assert plan["status"] == plan_json["status"] == "critical"
    assert plan["page_oncall"] is True
    assert "roc_auc_drop_critical" in plan["rules_fired"]
    assert plan["findings"][2]["drift_overall"] is True
    drifted = {next(iter(d)) for d in plan["findings"][2]["top_drifted"]}
    assert {"age", "hours_per_week"} <= drifted
    points = (live / "metrics_history.jsonl").read_text().splitlines()
    assert len(points) == 192


def test_monitor_window_says_clearly_when_there_is_nothing_to_judge(
    tmp_path: Path, artifacts_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    PredictionLog(url).start().close()
    args = [
        "--database-url",
        url,
        "--reference",
        str(artifacts_dir),
        "--out-dir",
        str(tmp_path / "o"),
    ]
    assert monitor_window.main(args) == 2
    assert "the prediction log is empty" in capsys.readouterr().err
