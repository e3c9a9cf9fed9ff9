"""The loop: the prediction log (SQLite and PostgreSQL), labels, migrations, several workers,
hourly aggregation, the replay.

PostgreSQL tests use TEST_DATABASE_URL (scripts/start_postgres.sh prints it; .ci/run sets it) and
skip, saying why, where no server answers.
"""

from __future__ import annotations

import json
import re
import signal
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from src import agent_monitor, monitor_window
from src.dataset.adult import census_source
from src.loop import replay
from src.loop.columns import log_layout
from src.loop.ids import new_request_key
from src.loop.inserts import BatchWriter
from src.loop.labels import purge_unmatched, record_labels
from src.loop.metrics_files import CounterFile, collect
from src.loop.tables import (
    labels_table,
    make_engine,
    requests_table,
    upgrade,
)
from src.loop.writer import PredictionLog, Served
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import ADULT, DATA, FEATURES, adult_log, adult_tables
from tests.conftest import census_predictions as predictions_table
from tests.test_inference import Server, http

T0 = datetime(2026, 3, 1, tzinfo=UTC)
# The newest migration's revision id, as its file declares it (ids need not be the file's prefix).
HEAD = re.search(
    r'^revision = "([^"]+)"',
    sorted((Path(__file__).parent.parent / "src/loop/migrations/versions").glob("0*.py"))[
        -1
    ].read_text(),
    re.MULTILINE,
).group(1)


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def _rows(n: int, age: float = 40.0) -> list[dict[str, Any]]:
    return [{"age": age + i, "workclass": "Private", "sex": "Female"} for i in range(n)]


def _served(rows: list[dict[str, Any]], probabilities: Any, key: str | None = None) -> Served:
    body = json.dumps(rows).encode()
    return Served.of(
        body, np.asarray(probabilities, dtype=float), "v1", 0.5, key or new_request_key()
    )


def _record(
    log: PredictionLog,
    ts: datetime,
    rows: list[dict[str, Any]],
    probabilities: Any,
    *,
    latency: float = 1.5,
    key: str | None = None,
    request_id: str = "client-id",
) -> Served:
    served = _served(rows, probabilities, key)
    assert log.record(request_id, ts, "/predict", 200, latency, served)
    return served


def test_log_writes_every_row_and_request_under_its_prediction_id(database_url: str) -> None:
    log = adult_log(database_url).start()
    keys = []
    for i in range(20):
        keys.append(_record(log, T0, _rows(5), np.full(5, 0.7)).request_key)
        if i % 7 == 0:
            log.ship()  # several batches, as the service ships them
    assert log.flush()
    engine = make_engine(database_url)
    assert _count(engine, predictions_table) == 100
    assert _count(engine, requests_table) == 20
    with engine.connect() as connection:
        row = (
            connection.execute(
                select(predictions_table).where(
                    predictions_table.c.prediction_id == f"{keys[3]}-00002"
                )
            )
            .mappings()
            .one()
        )
    assert (row["age"], row["workclass"], row["sex"], row["predicted_class"]) == (
        42.0,
        "Private",
        "Female",
        1,
    )
    assert row["row_index"] == 2
    assert row["request_id"] == "client-id"  # the client's correlation id, kept as such
    assert row["education"] is None  # not sent: stored as missing
    log.close()
    engine.dispose()


def test_log_leaves_sensitive_fields_out_when_told(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    log = adult_log(url, log_sensitive=False).start()
    _record(log, T0, _rows(2), [0.1, 0.9])
    log.close()
    engine = make_engine(url)
    with engine.connect() as connection:
        sexes = connection.execute(select(predictions_table.c.sex)).scalars().all()
    assert sexes == [None, None]


def test_log_buffer_is_bounded_in_bytes_and_counts_what_it_drops(tmp_path: Path) -> None:
    dropped: list[tuple[int, str]] = []
    log = adult_log(
        f"sqlite:///{tmp_path / 'p.db'}",
        buffer_bytes=64 * 1024,
        on_drop=lambda rows, reason: dropped.append((rows, reason)),
    )
    # Not started: nothing writes, as when the database is far slower than the traffic.
    big = _served(_rows(100), np.zeros(100))
    accepted = 0
    started = time.perf_counter()
    for _ in range(200):
        accepted += log.record("r", T0, "/predict", 200, 1.0, big)
    assert time.perf_counter() - started < 1.0  # never blocks
    assert accepted == (64 * 1024) // big.size
    assert log.buffered_bytes <= 64 * 1024
    assert dropped == [(100, "buffer_full")] * (200 - accepted)
    assert log.dropped_rows == 100 * (200 - accepted)


def test_log_refused_row_costs_one_row_not_the_batch(database_url: str) -> None:
    # 41 requests in one batch; one reuses another's prediction ids, which the database refuses.
    folder = Path(tempfile.mkdtemp())
    log = adult_log(database_url, metrics_dir=str(folder)).start()
    key = new_request_key()
    for i in range(40):
        _record(log, T0, _rows(1), [0.5], key=key if i == 20 else None)
    _record(log, T0, _rows(1), [0.5], key=key)  # the same id again
    assert log.flush()
    log.close()
    engine = make_engine(database_url)
    assert _count(engine, predictions_table) == 40
    engine.dispose()
    text = collect(folder).decode()
    assert 'prediction_log_dropped_rows_total{reason="rejected"} 1.0' in text
    assert "prediction_log_written_rows_total 40.0" in text
    assert "prediction_log_retried_rows_total 41.0" in text


def test_log_stores_or_refuses_nul_text_without_losing_a_batch(database_url: str) -> None:
    # NUL never passes the API's contract. Written straight to the log, SQLite stores it and
    # PostgreSQL refuses it: either way it costs at most its own row, counted.
    folder = Path(tempfile.mkdtemp())
    log = adult_log(database_url, metrics_dir=str(folder)).start()
    for i in range(40):
        _record(log, T0, _rows(1), [0.5])
        if i == 17:
            _record(log, T0, [{"age": 1.0, "sex": "Fe\x00male", "workclass": "Private"}], [0.5])
    assert log.flush()
    log.close()
    engine = make_engine(database_url)
    stored = _count(engine, predictions_table)
    engine.dispose()
    text = collect(folder).decode()
    refused = 1 if database_url.startswith("postgresql") else 0
    assert stored == 41 - refused
    assert f"prediction_log_written_rows_total {41.0 - refused}" in text
    if refused:
        assert 'prediction_log_dropped_rows_total{reason="rejected"} 1.0' in text


class _FlakyEngine:
    """An engine whose first connections fail as an unreachable database does."""

    def __init__(self, engine: Engine, failures: int) -> None:
        self.engine, self.failures = engine, failures
        self.dialect = engine.dialect

    def raw_connection(self) -> Any:
        if self.failures:
            self.failures -= 1
            import sqlite3

            raise sqlite3.OperationalError("unable to open database file")
        return self.engine.raw_connection()


def test_log_waits_out_a_database_outage_and_then_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    engine = make_engine(url)
    upgrade(engine)
    writer = BatchWriter(
        _FlakyEngine(engine, failures=3),  # type: ignore[arg-type]
        log_sensitive=True,
        counters=CounterFile(None),
        tables=adult_tables(engine),
    )
    request = ("r", T0, "/predict", 200, 1.0, _served(_rows(3), [0.2, 0.5, 0.9]))
    started = time.perf_counter()
    assert writer.write([request], stop_waiting=lambda: False) == 3
    assert time.perf_counter() - started >= 0.1 + 0.2 + 0.4  # backed off, three times
    assert _count(engine, predictions_table) == 3


def test_log_gives_up_on_an_outage_only_when_told_to_stop_and_counts_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    engine = make_engine(url)
    upgrade(engine)
    counters = CounterFile(None)
    writer = BatchWriter(
        _FlakyEngine(engine, failures=99),  # type: ignore[arg-type]
        log_sensitive=True,
        counters=counters,
        tables=adult_tables(engine),
    )
    request = ("r", T0, "/predict", 200, 1.0, _served(_rows(3), [0.2, 0.5, 0.9]))
    assert writer.write([request], stop_waiting=lambda: True) == 3
    assert (
        counters.values[("prediction_log_dropped_rows", (("reason", "database_unavailable"),))] == 3
    )


def test_log_restarts_a_killed_writer_and_counts_what_it_held(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    log = adult_log(url).start()
    _record(log, T0, _rows(3), np.zeros(3))
    assert log.flush()
    log.process.kill()
    log.process.join(5)
    assert log.state.startswith("down")
    log.check()
    assert log.restarts == 1
    _record(log, T0, _rows(4), np.zeros(4))
    assert log.flush()
    assert log.state == "up"
    log.close()
    engine = make_engine(url)
    assert _count(engine, predictions_table) == 7
    engine.dispose()


# --- labels ----------------------------------------------------------------------------------


def test_labels_match_wait_correct_and_refuse(database_url: str) -> None:
    log = adult_log(database_url).start()
    served = _record(log, T0, _rows(3), [0.2, 0.6, 0.9])
    ids = [f"{served.request_key}-{i:05d}" for i in range(3)]
    early = f"{new_request_key()}-00000"  # a label that arrives before its prediction
    now = datetime.now(UTC)
    outcome = record_labels(log.engine, [(early, 1)], now=now)
    assert (outcome.stored, outcome.matched, outcome.pending) == (1, 0, [early])
    assert log.flush()
    outcome = record_labels(
        log.engine, [(ids[0], 0), (ids[2], 1), ("ghost", 1), (f"{'0' * 28}-00000", 1)], now=now
    )
    assert (outcome.stored, outcome.matched, outcome.pending) == (2, 2, [])
    assert [i["prediction_id"] for i in outcome.invalid] == ["ghost", f"{'0' * 28}-00000"]
    again = record_labels(log.engine, [(ids[0], 0), (ids[2], 1)], now=now)
    assert (again.stored, again.repeated, again.corrections) == (0, 2, 0)  # idempotent
    fixed = record_labels(log.engine, [(ids[0], 1)], now=now)
    assert (fixed.stored, fixed.corrections) == (1, 1)  # kept as a correction, with its time
    assert _count(log.engine, labels_table) == 4
    newest = select(func.max(labels_table.c.id)).group_by(labels_table.c.prediction_id)
    with log.engine.connect() as connection:
        latest = connection.execute(
            select(labels_table.c.prediction_id, labels_table.c.label).where(
                labels_table.c.id.in_(newest), labels_table.c.prediction_id.in_(ids)
            )
        ).all()
    assert sorted(label for _, label in latest) == [1, 1]  # the latest label per row
    log.close()


def test_labels_waiting_too_long_for_their_prediction_are_purged(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    upgrade(engine)
    now = datetime.now(UTC)
    old, recent = (f"{new_request_key()}-00000" for _ in range(2))
    with engine.begin() as connection:  # a label that has waited 200 hours for its prediction
        connection.execute(
            labels_table.insert(),
            {"prediction_id": old, "label": 1, "received_at": now - timedelta(hours=200)},
        )
    record_labels(engine, [(recent, 1)], now=now)
    assert purge_unmatched(engine, now=now, keep=timedelta(hours=168)) == 1
    assert _count(engine, labels_table) == 1


# --- the schema evolves in place, safely ------------------------------------------------------


def _old_log(url: str) -> None:
    """A log as the previous version wrote it: first schema, no Alembic table, rows and labels."""
    from alembic import command
    from alembic.config import Config

    from src.loop.tables import MIGRATIONS

    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        # The previous release's first schema had the census's columns in predictions.
        for name in FEATURES:
            kind = "DOUBLE PRECISION" if ADULT.column(name).is_numeric else "VARCHAR(200)"
            connection.execute(text(f"ALTER TABLE predictions ADD COLUMN {name} {kind}"))
        for i in range(3):
            connection.execute(
                text(
                    "INSERT INTO predictions (request_id, row_index, ts, model_version, age, "
                    "probability, predicted_class) VALUES ('old', :i, :ts, 'v0', 40, 0.5, 1)"
                ),
                {"i": i, "ts": T0},
            )
        connection.execute(
            text(
                "INSERT INTO feedback (request_id, row_index, label, received_at) "
                "VALUES ('old', 1, 1, :ts)"
            ),
            {"ts": T0},
        )
    engine.dispose()


def test_migration_upgrades_an_old_log_in_place(database_url: str) -> None:
    _old_log(database_url)
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # again: nothing to do
    with engine.connect() as connection:
        ids = (
            connection.execute(
                select(predictions_table.c.prediction_id).order_by(predictions_table.c.row_index)
            )
            .scalars()
            .all()
        )
        labels = connection.execute(
            select(labels_table.c.prediction_id, labels_table.c.label)
        ).all()
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert len(set(ids)) == 3
    assert all(i.startswith("legacy-") for i in ids)
    assert [tuple(r) for r in labels] == [(ids[1], 1)]  # the old label followed its row
    assert version == HEAD
    layout = log_layout(engine)  # the log is the census's, its columns recorded as they are
    assert (layout.dataset, layout.features) == (ADULT.name, FEATURES)
    assert layout.columns == FEATURES
    with engine.connect() as connection:
        ages = connection.execute(select(predictions_table.c.age)).scalars().all()
    assert ages == [40.0, 40.0, 40.0]  # no value lost
    log = adult_log(database_url).start()  # and the new writer writes into it
    _record(log, T0, _rows(2), [0.1, 0.9])
    log.close()
    assert _count(engine, predictions_table) == 5
    engine.dispose()


def test_migration_is_safe_when_processes_start_at_once(database_url: str) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from src.loop.tables import make_engine, upgrade; "
        "upgrade(make_engine(sys.argv[1]))"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url], cwd=Path(__file__).parent.parent
        )
        for _ in range(4)
    ]
    assert [p.wait(timeout=120) for p in starts] == [0, 0, 0, 0]
    engine = make_engine(database_url)
    with engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
        )
    engine.dispose()


# --- authority ---------------------------------------------------------------------------------


def test_feedback_needs_the_service_token(artifacts_dir: Path, tmp_path: Path) -> None:
    label = {"labels": [{"prediction_id": f"{new_request_key()}-00000", "label": 1}]}
    settings = {
        "ARTIFACTS_DIR": artifacts_dir,
        "PREDICTION_LOG_DIR": tmp_path,
        "LOG_REQUESTS": False,
    }
    with TestClient(create_app(Settings(**settings))) as client:  # no token configured
        refused = client.post("/feedback", json=label, headers={"Authorization": "Bearer x"})
    assert refused.status_code == 403
    assert "Set SERVICE_TOKEN" in refused.json()["detail"]
    configured = Settings(**settings, SERVICE_TOKEN="right-token")  # noqa: S106 - a test's
    with TestClient(create_app(configured)) as client:
        missing = client.post("/feedback", json=label)
        wrong = client.post("/feedback", json=label, headers={"Authorization": "Bearer wrong"})
        right = client.post(
            "/feedback", json=label, headers={"Authorization": "Bearer right-token"}
        )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert right.json()["stored"] == 1


# --- the real service, several workers -----------------------------------------------------------

TOKEN = "test-token-for-the-log"  # noqa: S105 - not a secret: the test server's own


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None  # refused: the server is shutting down


def _two_workers(artifacts_dir: Path, database_url: str) -> Server:
    server = Server(
        artifacts_dir,
        uvicorn_args=("--workers", "2", "--no-access-log"),
        DATABASE_URL=database_url,
        SERVICE_TOKEN=TOKEN,
        LOG_REQUESTS="false",
    )
    server.wait_ready()
    return server


def _scraped(url: str, prefix: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_two_workers_lose_nothing_and_count_every_request(
    artifacts_dir: Path, database_url: str
) -> None:
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:10]
    server = _two_workers(artifacts_dir, database_url)
    answered: list[str] = []
    sent = [0]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            sent[0] += 1
            status, body = _post(f"{server.url}/predict", rows)
            if status == 200:
                answered.extend(p["prediction_id"] for p in body["predictions"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)  # under load ...
        stop.set()
        for t in threads:
            t.join(timeout=30)
        time.sleep(1.2)  # each worker publishes its numbers twice a second
        counted = _scraped(server.url, 'http_requests_total{endpoint="/predict"')
        server.process.send_signal(signal.SIGTERM)  # ... then a graceful stop
        server.process.wait(timeout=60)
    finally:
        if server.process.poll() is None:
            server.kill()
    engine = make_engine(database_url)
    with engine.connect() as connection:
        logged = connection.execute(select(predictions_table.c.prediction_id)).scalars().all()
    engine.dispose()
    assert len(answered) > 500
    assert counted == sent[0] == len(answered) // len(rows)
    assert len(logged) == len(set(logged)) == len(answered)  # every answered row, exactly once
    assert set(logged) == set(answered)


def test_labels_sent_to_any_worker_right_away_all_match(
    artifacts_dir: Path, database_url: str
) -> None:
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:5]
    server = _two_workers(artifacts_dir, database_url)
    authority = {"Authorization": f"Bearer {TOKEN}"}
    try:
        ids = []
        for _ in range(40):  # fresh connections: the kernel spreads them over both workers
            _, body = _post(f"{server.url}/predict", rows)
            ids += [p["prediction_id"] for p in body["predictions"]]
        labels = [{"prediction_id": i, "label": n % 2} for n, i in enumerate(ids)]
        outcomes = [
            _post(f"{server.url}/feedback", {"labels": labels[k : k + 20]}, authority)[1]
            for k in range(0, len(labels), 20)
        ]
        assert all(o is not None and o["invalid"] == [] for o in outcomes)
        assert sum(o["stored"] for o in outcomes) == len(ids)  # none lost, matched or not yet
        time.sleep(1.5)  # the writers flush
        again = _post(f"{server.url}/feedback", {"labels": labels}, authority)[1]
    finally:
        server.kill()
    assert again["matched"] == len(ids)
    assert again["repeated"] == len(ids)
    assert again["pending"] == []


def test_ready_says_when_the_writer_died_and_serving_goes_on(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        ARTIFACTS_DIR=artifacts_dir, PREDICTION_LOG_DIR=tmp_path, LOG_REQUESTS=False
    )
    app = create_app(settings)
    row = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][0]
    with TestClient(app) as client:
        log = app.state.prediction_log
        assert log.flush()
        log.process.kill()
        log.process.join(5)
        assert client.get("/ready").json()["prediction_log"]["state"].startswith("down")
        assert client.post("/predict", json=[row]).status_code == 200  # serving goes on
        deadline = time.monotonic() + 30
        while client.get("/ready").json()["prediction_log"]["state"] != "up":
            assert time.monotonic() < deadline, "the writer was not restarted"
            time.sleep(0.1)
        status = client.get("/ready").json()["prediction_log"]
        assert status["writer_restarts"] == 1
        assert client.post("/predict", json=[row]).status_code == 200
        assert log.flush()
        assert _count(log.engine, predictions_table) >= 1


def test_the_replay_ends_in_the_verdict_its_shift_calls_for(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    server = Server(artifacts_dir, DATABASE_URL=url, ACCEPT_EVENT_TIME="true", SERVICE_TOKEN=TOKEN)
    try:
        server.wait_ready()
        source = census_source(DATA / "raw" / "adult.test")
        summary = replay.replay(server.url, source=source, rows_per_hour=200, token=TOKEN)
        assert summary["labelled"] == summary["rows"] == 192 * 200
        live = tmp_path / "live"
        assert (
            monitor_window.main(
                [
                    "--database-url",
                    url,
                    "--reference",
                    str(artifacts_dir),
                    "--out-dir",
                    str(live),
                    "--min-labelled",
                    "100",  # 200 rows an hour here; the default 500 suits 1,000 an hour
                ]
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
        server.kill()
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
    adult_log(url).start().close()
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
