"""Acts you can trust (issue 22): a plan acts once whatever its files, a failure never loses a page
and a rerun resumes, every CLI fails in one line with the shared exit codes, migrations go both
ways, and nothing is left in the temp folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from src import agent_monitor
from src.loop.ids import new_request_key, prediction_ids, why_never_issued
from src.loop.tables import (
    current_revision,
    downgrade,
    labels_table,
    make_engine,
    model_events_table,
    requests_table,
    upgrade,
)
from src.registry.actions import register_trained
from src.registry.core import Registry
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import DATA, ROOT, adult_tables
from tests.conftest import census_predictions as predictions_table

TOKEN = "acting-test-token"  # noqa: S105 - a test token
CLOSED = "postgresql+psycopg://postgres@127.0.0.1:9/nothing"  # discard port: nothing listens


class _Receiver(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str]]] = []  # (action, idempotency key)
    datasets: ClassVar[set[str]] = set()  # the dataset label of every alert

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Receiver.calls.append(
            (body["commonLabels"]["action"], self.headers.get("Idempotency-Key", ""))
        )
        _Receiver.datasets.add(body["commonLabels"]["dataset"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.calls.clear()
    _Receiver.datasets.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()


def _critical_history(path: Path) -> Path:
    """A week of steady ROC-AUC, then a fall: critical (roll back, incident, page)."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    points = [
        {
            "ts": (start + timedelta(hours=h)).isoformat(),
            "roc_auc": 0.92 if h < 190 else 0.80,
            "pr_auc": 0.80,
            "acc": 0.86,
            "latency_p95_ms": 20.0,
            "error_rate": 0.0,
        }
        for h in range(192)
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in points))
    return path


@pytest.fixture
def state(
    tmp_path: Path, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch, receiver: str
) -> Registry:
    """A registry with a champion in a temp folder, the agent's environment pointing at it."""
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver)
    settings = Settings()
    engine = make_engine(settings.registry_url)
    upgrade(engine)
    registry = Registry(engine, settings.registry_store)
    register_trained(registry, artifacts_dir, settings, actor="test")
    return registry


def _act(metrics: Path, out: Path, *extra: str) -> int:
    return agent_monitor.main(["--metrics", str(metrics), "--out", str(out), "--execute", *extra])


def test_a_plan_acts_once_whatever_path_or_time_its_file_has(
    state: Registry, tmp_path: Path
) -> None:
    metrics = _critical_history(tmp_path / "metrics.jsonl")
    assert _act(metrics, tmp_path / "plan1.yaml") == 0
    os.utime(metrics, (1e9, 1e9))  # touched
    assert _act(metrics, tmp_path / "plan2.yaml") == 0
    copy = tmp_path / "elsewhere" / "same.jsonl"
    copy.parent.mkdir()
    shutil.copy(metrics, copy)  # the same content under another path
    assert _act(copy, tmp_path / "plan3.yaml") == 0
    sent = [action for action, _ in _Receiver.calls]
    assert sorted(sent) == ["open_incident", "page_oncall"]  # once each, over three runs
    assert _Receiver.datasets == {"adult-income"}  # the served spec's name
    for again in ("plan2.yaml", "plan3.yaml"):
        executed = yaml.safe_load((tmp_path / again).read_text())["executed"]
        assert "was executed already" in executed[0]["result"]


def test_two_identical_monitor_posts_act_once(
    state: Registry, tmp_path: Path, artifacts_dir: Path
) -> None:
    points = [json.loads(line) for line in _critical_history(tmp_path / "m.jsonl").open()]
    settings = Settings(
        ARTIFACTS_DIR=artifacts_dir,
        AGENT_EXECUTE_OVER_HTTP=True,
        SERVICE_TOKEN=TOKEN,
        LOG_REQUESTS=False,
        LOG_PREDICTIONS=False,
    )
    with TestClient(create_app(settings)) as client:
        answers = [
            client.post(
                "/monitor",
                json={"metrics": points, "execute": True},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            for _ in range(2)
        ]
    assert [a.status_code for a in answers] == [200, 200], answers[-1].text
    assert sorted(action for action, _ in _Receiver.calls) == ["open_incident", "page_oncall"]
    assert "executed already" in answers[1].json()["executed"][0]["result"]


def test_a_failed_retraining_loses_no_page_and_a_rerun_resumes(
    state: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A critical plan whose retraining failed: it used to exit 2 with only open_incident in the
    history (no page, no record, no plan file), and a rerun sent another incident."""
    history = [json.loads(line) for line in _critical_history(tmp_path / "m.jsonl").open()]
    for point in history[-2:]:  # and a PR-AUC fall with drift: the retraining rule fires too
        point["pr_auc"] = 0.70
    metrics = tmp_path / "critical.jsonl"
    metrics.write_text("".join(json.dumps(p) + "\n" for p in history))
    drift = tmp_path / "drift.json"
    drift.write_text(json.dumps({"threshold": 0.2, "overall_drift": True, "features": {}}))
    broken = tmp_path / "broken.csv"
    broken.write_text("not,a,census,file\n1,2,3,4\n")
    monkeypatch.setenv("AGENT_COOLDOWN_HOURS", "0")
    args = ["--drift", str(drift), "--data", str(broken)]
    code = _act(metrics, tmp_path / "plan.yaml", *args)
    plan = yaml.safe_load((tmp_path / "plan.yaml").read_text())  # written although it failed
    results = {r["action"]: r for r in plan["executed"]}
    assert code == 2  # bad input: the training data
    assert results["trigger_retraining"]["result"] == "failed"
    assert "missing column" in results["trigger_retraining"]["error"]
    assert results["open_incident"]["result"] == results["page_oncall"]["result"] == "sent"
    kinds = [(e["kind"], (e["details"] or {}).get("action")) for e in state.history()]
    assert ("act_done", "page_oncall") in kinds
    assert ("act_failed", "trigger_retraining") in kinds
    assert kinds.index(("act_done", "page_oncall")) < kinds.index(
        ("act_intent", "trigger_retraining")
    )
    # The rerun resumes what is left: no second incident, no second page; the rollback (done)
    # is not repeated either.
    code = _act(metrics, tmp_path / "again.yaml", "--drift", str(drift), "--data", str(broken))
    again = {
        r["action"]: r for r in yaml.safe_load((tmp_path / "again.yaml").read_text())["executed"]
    }
    assert code == 2
    assert again["open_incident"]["resumed"] == again["page_oncall"]["resumed"]
    assert "resumed" not in again["trigger_retraining"]  # tried again, failed again
    assert sorted(action for action, _ in _Receiver.calls) == ["open_incident", "page_oncall"]


def test_retraining_through_the_cli_leaves_nothing_in_the_temp_folder(
    state: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = [json.loads(line) for line in _critical_history(tmp_path / "m.jsonl").open()]
    for point in history[-2:]:
        point["pr_auc"] = 0.70
    metrics = tmp_path / "critical.jsonl"
    metrics.write_text("".join(json.dumps(p) + "\n" for p in history))
    drift = tmp_path / "drift.json"
    drift.write_text(json.dumps({"threshold": 0.2, "overall_drift": True, "features": {}}))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setenv("AGENT_COOLDOWN_HOURS", "0")
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    code = _act(metrics, tmp_path / "plan.yaml", "--drift", str(drift))
    results = {
        r["action"]: r for r in yaml.safe_load((tmp_path / "plan.yaml").read_text())["executed"]
    }
    assert code == 0, results
    assert results["trigger_retraining"]["result"] in ("promoted", "refused")
    assert list(temp.iterdir()) == []


# --- every CLI against a database that does not answer -------------------------------------------


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["src.registry", "list"],
        ["src.registry", "promote", "0123456789abcdef"],
        ["src.loop.migrate", "current"],
        ["src.monitor_window", "--reference", "ARTIFACTS", "--out-dir", "OUT"],
        ["src.agent_monitor", "--metrics", "METRICS", "--out", "OUT/plan.yaml", "--execute"],
        [
            "src.train",
            "--data",
            str(DATA / "adult_ref_sample.csv"),
            "--outdir",
            "OUT/set",
            "--trials",
            "0",
        ],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_cli_says_in_one_line_that_the_database_did_not_answer(
    command: list[str], tmp_path: Path, artifacts_dir: Path
) -> None:
    metrics = _critical_history(tmp_path / "metrics.jsonl")
    swap = {"ARTIFACTS": str(artifacts_dir), "OUT": str(tmp_path), "METRICS": str(metrics)}
    args = [swap.get(a, a).replace("OUT/", f"{tmp_path}/") for a in command]
    done = _run(args, DATABASE_URL=CLOSED)
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith(("error:", "refused:"))]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "127.0.0.1" in errors[0] or "did not answer" in errors[0]
    if command[0] == "src.agent_monitor":  # the plan is written, saying what failed
        executed = yaml.safe_load((tmp_path / "plan.yaml").read_text())["executed"]
        assert executed[0]["failure"] == "unreachable"


def test_the_replay_says_in_one_line_that_the_service_did_not_answer() -> None:
    done = _run(["src.loop.replay", "--url", "http://127.0.0.1:9", "--wait", "1"])
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert "cannot reach the service" in done.stderr


def test_registering_a_corrupt_set_is_bad_input(tmp_path: Path, artifacts_dir: Path) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(artifacts_dir, folder)
    (folder / "model.pkl").write_bytes(b"not a model")
    done = _run(["src.registry", "register", str(folder)], PREDICTION_LOG_DIR=str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "sha256 does not match" in done.stderr


# --- migrations go both ways ---------------------------------------------------------------------


def _count(engine: Any, table: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_migrations_go_down_to_base_and_up_again_keeping_the_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    adult_tables(engine)  # the census's columns claimed, as serving claims them
    ts = datetime(2026, 11, 30, 10, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(predictions_table),
            [
                {
                    "prediction_id": f"{i:012x}{'0' * 16}-00000",
                    "request_id": f"r{i}",
                    "row_index": 0,
                    "ts": ts + timedelta(minutes=i),
                    "model_version": "v1",
                    "age": 30.0 + i,
                    "probability": 0.3,
                    "predicted_class": 0,
                }
                for i in range(5)
            ],
        )
        request = {"ts": ts, "path": "/predict", "status": 200, "latency_ms": 1.0, "rows": 1}
        connection.execute(
            insert(requests_table), [{**request, "request_id": f"r{i}"} for i in range(5)]
        )
        connection.execute(
            insert(labels_table),
            [
                {"prediction_id": f"{i:012x}{'0' * 16}-00000", "label": i % 2, "received_at": ts}
                for i in range(3)
            ],
        )
        connection.execute(
            insert(model_events_table),
            [{"ts": ts, "kind": "registered", "actor": "t", "reason": "t"}],
        )
    downgrade(engine, "0001")  # the first log's schema: rows by (request id, row), feedback
    with engine.connect() as connection:
        old = connection.exec_driver_sql("SELECT count(*) FROM predictions").scalar()
        feedback = connection.exec_driver_sql("SELECT count(*) FROM feedback").scalar()
        requests = connection.exec_driver_sql("SELECT count(*) FROM requests").scalar()
    assert (old, feedback, requests) == (5, 3, 5)
    upgrade(engine)  # and back: every row, every label (the ids become legacy ones)
    assert (
        current_revision(engine)
        == sorted(p.name[:4] for p in (ROOT / "src/loop/migrations/versions").glob("0*.py"))[-1]
    )
    assert (_count(engine, predictions_table), _count(engine, labels_table)) == (5, 3)
    downgrade(engine, "base")
    assert current_revision(engine) is None
    upgrade(engine)
    assert _count(engine, predictions_table) == 0
    engine.dispose()


# --- inputs are bounded --------------------------------------------------------------------------


def test_an_id_with_a_trailing_newline_is_invalid() -> None:
    good = prediction_ids(new_request_key(), 43)[42]
    now = datetime.now(UTC)
    assert why_never_issued(good, now) is None
    assert why_never_issued(good + "\n", now) is not None
    assert why_never_issued(good + " ", now) is not None


def test_event_times_are_bounded(tmp_path: Path, artifacts_dir: Path) -> None:
    """One row stamped 10 years ago made the next refresh compute 87,660 hours."""
    settings = Settings(
        ARTIFACTS_DIR=artifacts_dir,
        PREDICTION_LOG_DIR=tmp_path,
        ACCEPT_EVENT_TIME=True,
        LOG_REQUESTS=False,
        LOG_PREDICTIONS=False,
        PREDICT_ENGINE="booster",
    )
    row = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][0]
    offsets = {
        timedelta(days=-3650): 400,
        timedelta(days=-31): 400,
        timedelta(days=-29): 200,
        timedelta(minutes=4): 200,
        timedelta(minutes=10): 400,
    }
    with TestClient(create_app(settings)) as client:
        for offset, status in offsets.items():
            stamp = (datetime.now(UTC) + offset).isoformat()
            answer = client.post("/predict", json=[row], headers={"X-Event-Time": stamp})
            assert answer.status_code == status, (offset, answer.text)
            if status == 400:
                assert "X-Event-Time" in answer.json()["detail"]
                assert "EVENT_TIME_MAX_AGE_DAYS" in answer.json()["detail"]


def test_the_migrations_form_one_line() -> None:
    """One head, each revision after the one before: two branches merged with two heads once
    left the log unable to start."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "src/loop/migrations"))
    script = ScriptDirectory.from_config(config)
    assert len(script.get_heads()) == 1
    revisions = [r.revision for r in script.walk_revisions()]  # newest first
    assert revisions == sorted(revisions, reverse=True)


def _plan_of(history: Path) -> Any:
    from src.agent import load_metrics, monitor

    points = load_metrics(history)
    return monitor(points, None, now=datetime.now(UTC))


def test_one_incident_pages_once_though_each_hour_makes_a_new_plan(
    state: Registry, tmp_path: Path
) -> None:
    """In the agent-acting soak each monitoring run judged a new hour: a new plan, and a new
    page for the same incident. An alert already sent for an incident as grave within
    AGENT_ALERT_REPEAT_HOURS is not sent again; a graver one, or a later one, is."""
    from src.agent.executor import Executor

    first = _plan_of(_critical_history(tmp_path / "a.jsonl"))
    longer = [json.loads(line) for line in (tmp_path / "a.jsonl").open()]
    longer.append(
        {
            **longer[-1],
            "ts": (datetime.fromisoformat(longer[-1]["ts"]) + timedelta(hours=1)).isoformat(),
        }
    )
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(p) + "\n" for p in longer))
    second = _plan_of(tmp_path / "b.jsonl")
    assert first.status == second.status == "critical"
    executor = Executor(state, Settings())
    executor.execute(first)
    results = {r["action"]: r["result"] for r in executor.execute(second)}
    assert sorted(action for action, _ in _Receiver.calls) == ["open_incident", "page_oncall"]
    assert results["page_oncall"].startswith("skipped: sent for this incident at")
    later = Executor(state, Settings(AGENT_ALERT_REPEAT_HOURS=0))
    third = _plan_of(tmp_path / "b.jsonl").model_copy(update={"findings": [{"n": 3}]})
    later.execute(third)
    assert sorted(action for action, _ in _Receiver.calls).count("page_oncall") == 2


def test_a_plans_own_rollback_does_not_hold_back_its_retraining(
    state: Registry, tmp_path: Path, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A critical plan rolls back (stop the harm), then retrains (repair): the cooldown that
    keeps plans from undoing each other skipped the retraining, because of the rollback the
    same plan had just made."""
    from src.agent.executor import Executor
    from src.registry.actions import promote
    from src.training.train import train

    second = train(DATA / "adult_synth.csv", tmp_path / "seed7", seed=7, trials=0).outdir
    version, _ = state.register(second, actor="test")
    promote(state, version, Settings(), force=True, actor="test", reason="test")
    time.sleep(1.0)
    monkeypatch.setenv("AGENT_COOLDOWN_HOURS", "0.0002")  # 0.7 s: the manual move is past it
    plan = _plan_of(_critical_history(tmp_path / "m.jsonl"))
    assert plan.actions[:1] == ["roll_back_model"]
    results = Executor(state, Settings(), retrain=lambda: second).execute(plan)
    outcome = {r["action"]: r["result"] for r in results}
    assert outcome["roll_back_model"] == "rolled_back"
    assert not outcome["trigger_retraining"].startswith("skipped")  # judged by the gate
