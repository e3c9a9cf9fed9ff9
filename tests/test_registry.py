"""The model registry, the gate, hot swap and the agent that acts (issue 15)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from src.agent import executor as executor_module
from src.agent.executor import Executor, acting
from src.agent.plan import AgentPlan
from src.artifacts import MODEL_FILE, SAMPLE_FILE, model_version
from src.loop.tables import make_engine, upgrade
from src.registry.actions import promote, register_trained, rollback
from src.registry.core import CHAMPION, Registry
from src.service.factory import create_app
from src.service.state import load_predictor
from src.settings import Settings
from src.train import train
from tests.conftest import DATA
from tests.test_inference import Server, http


@pytest.fixture(scope="module")
def second_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another good model: the same data, another seed and no search."""
    folder = tmp_path_factory.mktemp("second")
    train(DATA / "adult_synth.csv", folder, seed=7, trials=0)
    return folder


def _trained_on(frame: pd.DataFrame, folder: Path) -> Path:
    data = folder / "data.csv"
    frame.to_csv(data, index=False)
    train(data, folder / "set", seed=42, trials=0)
    return folder / "set"


@pytest.fixture(scope="module")
def shuffled_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worse model: trained on shuffled labels."""
    frame = pd.read_csv(DATA / "adult_synth.csv")
    frame["income_gt_50k"] = np.random.default_rng(0).permutation(frame["income_gt_50k"])
    return _trained_on(frame, tmp_path_factory.mktemp("shuffled"))


@pytest.fixture(scope="module")
def unfair_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that learned to favour husbands (relationship gives sex away): wider sex gaps."""
    frame = pd.read_csv(DATA / "adult_synth.csv")
    rng = np.random.default_rng(1)
    husbands = (frame["relationship"] == "Husband") & (rng.random(len(frame)) < 0.5)
    frame.loc[husbands, "income_gt_50k"] = 1
    return _trained_on(frame, tmp_path_factory.mktemp("unfair"))


def _registry(tmp_path: Path) -> Registry:
    """Where a service with PREDICTION_LOG_DIR=tmp_path finds it (its defaults)."""
    settings = _settings(tmp_path)
    engine = make_engine(settings.registry_url)
    upgrade(engine)
    return Registry(engine, settings.registry_store)


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(PREDICTION_LOG_DIR=tmp_path, LOG_REQUESTS=False, **extra)


def _with_champion(tmp_path: Path, artifacts_dir: Path) -> Registry:
    registry = _registry(tmp_path)
    register_trained(registry, artifacts_dir, _settings(tmp_path), actor="test")
    return registry


# --- the registry -----------------------------------------------------------------------------


def test_registry_versions_are_content_hashes_and_registering_again_changes_nothing(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _registry(tmp_path)
    first, new = registry.register(artifacts_dir, actor="test")
    again, new_again = registry.register(artifacts_dir, actor="test")
    other, _ = registry.register(second_set, actor="test")
    assert new
    assert not new_again
    assert (
        first == again == model_version(json.loads((artifacts_dir / "manifest.json").read_text()))
    )
    assert other != first  # same data, another seed: another version
    assert (registry.folder(first) / MODEL_FILE).is_file()
    assert [e["kind"] for e in registry.history()] == ["registered", "registered"]


def test_training_makes_the_first_set_champion_and_gates_the_next(
    tmp_path: Path, artifacts_dir: Path, shuffled_set: Path
) -> None:
    registry = _registry(tmp_path)
    settings = _settings(tmp_path)
    said = register_trained(registry, artifacts_dir, settings, actor="test")
    assert "registered as champion" in said
    champion = registry.alias(CHAMPION)
    said = register_trained(registry, shuffled_set, settings, actor="test")
    assert "registered as a candidate" in said
    assert registry.alias(CHAMPION) == champion  # a second training surprises no one


def test_gate_refuses_a_worse_challenger_and_says_why(
    tmp_path: Path, artifacts_dir: Path, shuffled_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    version, _ = registry.register(shuffled_set, actor="test")
    code, outcome = promote(registry, version, _settings(tmp_path), force=False, actor="test")
    assert code == 1
    assert any("ROC-AUC" in r for r in outcome["reasons"])
    assert outcome["numbers"]["roc_auc_difference"] < -0.1
    low, high = outcome["numbers"]["difference_ci95"]
    assert low <= outcome["numbers"]["roc_auc_difference"] <= high
    assert "holdout" in outcome["rows_from"]
    assert registry.history()[-1]["kind"] == "refused"


def test_gate_refuses_a_challenger_that_widens_a_fairness_gap(
    tmp_path: Path, artifacts_dir: Path, unfair_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    version, _ = registry.register(unfair_set, actor="test")
    code, outcome = promote(registry, version, _settings(tmp_path), force=False, actor="test")
    assert code == 1
    assert outcome["numbers"]["gap_widening"]["sex_dp"] > 0.02
    assert any("sex dp gap widens" in r for r in outcome["reasons"])


def test_force_overrides_the_gate_and_the_history_says_so(
    tmp_path: Path, artifacts_dir: Path, shuffled_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    version, _ = registry.register(shuffled_set, actor="test")
    code, outcome = promote(registry, version, _settings(tmp_path), force=True, actor="test")
    assert (code, outcome["outcome"]) == (0, "forced")
    assert registry.alias(CHAMPION) == version
    assert registry.history()[-1]["kind"] == "forced"
    assert "forced past the gate" in registry.history()[-1]["reason"]


def test_rollback_restores_the_previous_champion_within_the_cooldown_rules(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    first = registry.alias(CHAMPION)
    second, _ = registry.register(second_set, actor="test")
    promote(registry, second, _settings(tmp_path), force=True, actor="test")
    code, outcome = rollback(registry, _settings(tmp_path), force=False, actor="test")
    assert code == 1  # the champion just moved: the cooldown holds
    assert "cooldown" in outcome["reason"]
    code, outcome = rollback(
        registry, _settings(tmp_path, AGENT_COOLDOWN_HOURS=0), force=False, actor="t"
    )
    assert (code, registry.alias(CHAMPION)) == (0, first)


# --- serving the champion -------------------------------------------------------------------------


def test_a_corrupt_version_is_never_served(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    served = registry.alias(CHAMPION)
    bad, _ = registry.register(second_set, actor="test")
    (registry.folder(bad) / MODEL_FILE).write_bytes(b"not the model")  # corrupted in the store
    app = create_app(_settings(tmp_path, MODEL_POLL_SECONDS=0.2))
    with TestClient(app) as client:
        registry.set_alias(CHAMPION, bad, kind="forced", actor="test", reason="test")
        deadline = time.monotonic() + 30
        while "not_served" not in (ready := client.get("/ready").json()):
            assert time.monotonic() < deadline, ready
            time.sleep(0.1)
        assert ready["model_version"] == served  # the old model stays
        assert "sha256 does not match" in ready["not_served"][bad]
    assert registry.history()[-1]["kind"] == "refused_to_serve"


def test_any_load_error_keeps_the_process_up_and_says_why(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    # A sample whose hash matches its manifest but whose row lacks fields.
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(artifacts_dir, folder)
    sample = json.loads((folder / SAMPLE_FILE).read_text())
    sample["rows"] = [{"age": 40}]
    (folder / SAMPLE_FILE).write_text(json.dumps(sample))
    manifest = json.loads((folder / "manifest.json").read_text())
    import hashlib

    manifest["files"][SAMPLE_FILE] = hashlib.sha256((folder / SAMPLE_FILE).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    state = load_predictor(_settings(tmp_path, ARTIFACTS_DIR=folder))
    assert state.predictor is None
    assert "ValidationError" in state.reason


def _post(url: str, rows: list[dict[str, Any]]) -> tuple[int, str | None]:
    status, body = http("POST", f"{url}/predict", rows)
    return status, body.get("model_version") if status == 200 else None


def test_a_swap_under_load_fails_no_request_and_changes_version(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    first = registry.alias(CHAMPION)
    second, _ = registry.register(second_set, actor="test")
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:3]
    server = Server(
        None,
        PREDICTION_LOG_DIR=str(tmp_path),
        MODEL_POLL_SECONDS="0.2",
        LOG_REQUESTS="false",
    )
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            answers.append(_post(server.url, rows))

    try:
        server.wait_ready()
        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1)
        registry.set_alias(CHAMPION, second, kind="forced", actor="test", reason="swap test")
        deadline = time.monotonic() + 60
        while not answers or answers[-1][1] != second:
            assert time.monotonic() < deadline, "the service never swapped"
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        server.kill()
    statuses = {status for status, _ in answers}
    versions = [v for _, v in answers]
    assert statuses == {200}  # not one failed request
    assert versions[0] == first
    assert versions[-1] == second
    assert versions.index(second) > 0


def test_two_workers_converge_on_a_new_champion(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    second, _ = registry.register(second_set, actor="test")
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:1]
    server = Server(
        None,
        uvicorn_args=("--workers", "2", "--no-access-log"),
        PREDICTION_LOG_DIR=str(tmp_path),
        MODEL_POLL_SECONDS="0.2",
        LOG_REQUESTS="false",
    )
    try:
        server.wait_ready()
        time.sleep(3)  # the second worker too
        registry.set_alias(CHAMPION, second, kind="forced", actor="test", reason="converge")
        deadline = time.monotonic() + 60
        while True:  # fresh connections each: the kernel spreads them over both workers
            versions = {_post(server.url, rows)[1] for _ in range(40)}
            if versions == {second}:
                break
            assert time.monotonic() < deadline, versions
            time.sleep(0.5)
    finally:
        server.kill()


# --- the agent acts ---------------------------------------------------------------------------


def _plan(status: str = "critical", actions: list[str] | None = None, **extra: Any) -> AgentPlan:
    return AgentPlan(
        status=status,
        findings=[{"roc_auc_drop_pct": 14.3}],
        actions=actions or ["roll_back_model", "open_incident", "trigger_retraining"],
        page_oncall=status == "critical",
        rationale="ROC-AUC fell 14.3% vs its 7-day median.",
        rules_fired=["roc_auc_drop_critical"],
        generated_at=datetime.now(UTC).isoformat(),
        **extra,
    )


def test_executor_retrains_gates_promotes_and_acts_once(
    tmp_path: Path, artifacts_dir: Path, second_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    first = registry.alias(CHAMPION)
    executor = Executor(registry, _settings(tmp_path), retrain=lambda: second_set, actor="test")
    results = executor.execute(_plan())
    by_action = {r["action"]: r for r in results}
    assert [r["action"] for r in results][:3] == [
        "roll_back_model",
        "open_incident",
        "trigger_retraining",
    ]
    assert by_action["roll_back_model"]["result"] == "skipped: no previous champion"
    assert "stderr" in by_action["open_incident"]["result"]
    assert "open_incident: critical" in capsys.readouterr().err
    assert by_action["trigger_retraining"]["result"] in ("promoted", "refused")
    assert by_action["page_oncall"]["action"] == "page_oncall"
    moved = registry.alias(CHAMPION) != first
    assert moved == (by_action["trigger_retraining"]["result"] == "promoted")
    again = executor.execute(_plan())  # the same plan: acts once
    assert "executed already" in again[0]["result"]


def test_executor_respects_the_cooldown(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    second, _ = registry.register(second_set, actor="test")
    promote(registry, second, _settings(tmp_path), force=True, actor="test")  # just moved
    executor = Executor(registry, _settings(tmp_path), retrain=lambda: second_set, actor="test")
    results = {
        r["action"]: r
        for r in executor.execute(_plan(actions=["roll_back_model", "trigger_retraining"]))
    }
    assert results["roll_back_model"]["result"] == "refused"
    assert "cooldown" in results["trigger_retraining"]["result"]
    assert registry.alias(CHAMPION) == second


def test_executor_takes_a_lock(tmp_path: Path, artifacts_dir: Path) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    with acting(registry) as held:
        assert held
        results = Executor(registry, _settings(tmp_path), actor="t").execute(
            _plan(actions=["raise_thresholds"])
        )
    assert "another executor is acting" in results[0]["result"]


def test_raise_thresholds_is_a_recommendation_only(tmp_path: Path, artifacts_dir: Path) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    results = Executor(registry, _settings(tmp_path), actor="t").execute(
        _plan(status="warn", actions=["raise_thresholds"])
    )
    assert results[0]["result"].startswith("recommended, not done")
    assert registry.history()[-2]["kind"] == "recommended"


class _Stub(BaseHTTPRequestHandler):
    mode: ClassVar[str] = "ok"
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.bodies.append(body)
        if _Stub.mode == "slow":
            time.sleep(1.0)
        self.send_response(500 if _Stub.mode == "error" else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(executor_module, "WEBHOOK_TIMEOUT", 0.3)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stub.bodies.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("mode", "result"), [("ok", "sent"), ("slow", "failed"), ("error", "failed")]
)
def test_incidents_go_to_the_webhook_with_timeout_and_retries(
    tmp_path: Path, artifacts_dir: Path, webhook: str, mode: str, result: str
) -> None:
    _Stub.mode = mode
    registry = _with_champion(tmp_path, artifacts_dir)
    settings = _settings(tmp_path, ALERT_WEBHOOK_URL=webhook)
    outcome = Executor(registry, settings, actor="t").execute(_plan(actions=["open_incident"]))[0]
    assert outcome["result"] == result
    assert outcome["attempts"] == (1 if mode == "ok" else executor_module.WEBHOOK_TRIES)
    alert = _Stub.bodies[0]
    assert alert["version"] == "4"
    assert alert["alerts"][0]["labels"]["action"] == "open_incident"
    if mode == "error":
        assert outcome["error"] == "HTTP 500"
