"""What a user reads matches what the service does: the card, /docs, /monitor's sources, the plan's
order and wording, help texts and messages (issue 17)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

import src.training.train as training
from src import agent_monitor, train
from src.agent import ACTIONS, RULES
from src.agent.plan import order_actions
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import CHALLENGE, DATA, ROOT
from tests.test_agent_monitor import history, plan_for
from tests.test_inference import Server
from tests.test_report import BROWSERS


def _client(artifacts: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(ARTIFACTS_DIR=artifacts, LOG_REQUESTS=False, **settings)))


# --- the card describes the model being served --------------------------------------------------


def test_report_matches_metadata_of_the_served_model(artifacts_dir: Path) -> None:
    with _client(artifacts_dir) as client:
        metadata = client.get("/metadata").json()
        page = client.get("/report").text
    assert metadata["links"]["report"] == "/report"
    assert f"Version <code>{metadata['model_version']}</code>" in page
    assert f"trained {metadata['trained_at']}" in page
    for name, digest in metadata["files"].items():
        assert f"<td>{name}</td><td><code>{digest}</code></td>" in page


def test_report_keeps_describing_the_loaded_model_after_a_retrain(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "a"
    shutil.copytree(artifacts_dir, folder)
    with _client(folder) as client:
        before = client.get("/metadata").json()
        training.train(DATA / "adult_synth.csv", folder, seed=7, trials=0)  # a new set, same folder
        page = client.get("/report").text
        assert client.get("/metadata").json() == before
    # The page still shows what is loaded and answering, hashes and all.
    assert f"trained {before['trained_at']}" in page
    assert before["files"]["model.pkl"] in page


def test_report_and_metadata_agree_when_no_model_is_loaded(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        assert client.get("/metadata").status_code == 503
        response = client.get("/report")
    assert response.status_code == 503
    assert "model not loaded" in response.json()["detail"]


def test_report_shows_the_live_loop_with_its_provenance(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    lines = history(last_roc=0.90 * 0.9)
    (live / "metrics_history.jsonl").write_text("\n".join(lines) + "\n")
    args = [
        "--metrics",
        str(live / "metrics_history.jsonl"),
        "--out",
        str(live / "agent_plan.yaml"),
    ]
    assert agent_monitor.main(args) == 0
    with _client(artifacts_dir, MONITOR_LIVE_DIR=live) as client:
        page = client.get("/report").text
    assert f"live loop ({live})" in page
    assert 'Agent verdict: <b class="bad">critical</b>' in page
    assert f"path {live / 'metrics_history.jsonl'}" in page
    assert "points 200" in page
    assert ">True<" not in page
    assert "True," not in page  # booleans read as yes/no, not Python's True


# --- /monitor says where its inputs came from ------------------------------------------------


def test_monitor_says_which_inputs_came_from_the_default_files(artifacts_dir: Path) -> None:
    with _client(artifacts_dir) as client:
        plan = client.post("/monitor").json()
    assert plan["sources"]["metrics"]["from"] == "file"
    assert plan["sources"]["metrics"]["default"] is True
    assert plan["sources"]["metrics"]["points"] == 200
    assert plan["sources"]["drift"]["path"] == "data/drift_latest.json"


def test_monitor_never_fills_in_a_drift_report_the_body_left_out(artifacts_dir: Path) -> None:
    points = [
        {"ts": "2026-01-01T00:00:00Z", "roc_auc": 0.9, "pr_auc": 0.7, "acc": 0.8},
        {"ts": "2026-01-01T01:00:00Z", "roc_auc": 0.9, "pr_auc": 0.6, "acc": 0.8},
    ]
    for p in points:
        p.update(latency_p95_ms=10.0, error_rate=0.0)
    with _client(artifacts_dir) as client:
        plan = client.post("/monitor", json={"metrics": points}).json()
    assert plan["sources"]["metrics"] == {
        "from": "request body",
        "points": 2,
        "first_ts": "2026-01-01T00:00:00+00:00",
        "last_ts": "2026-01-01T01:00:00+00:00",
    }
    assert plan["sources"]["drift"]["from"] == "none"
    assert "drift_and_pr_auc_critical" not in plan["rules_fired"]  # PR-AUC fell 14%, no drift given


def test_monitor_cli_yaml_carries_the_sources(tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    args = [
        "--metrics",
        str(DATA / "metrics_history.jsonl"),
        "--drift",
        str(DATA / "drift_latest.json"),
    ]
    assert agent_monitor.main([*args, "--out", str(out)]) == 0
    plan = yaml.safe_load(out.read_text())
    assert plan["sources"]["metrics"]["path"] == str(DATA / "metrics_history.jsonl")
    assert plan["sources"]["drift"]["path"] == str(DATA / "drift_latest.json")
    assert "modified" in plan["sources"]["drift"]


# --- the plan: a safe order, and words that agree with the findings ----------------------------


def test_plan_orders_actions_roll_back_and_incident_before_retraining() -> None:
    every_action = [a for rule in RULES for a in rule.actions]
    assert order_actions(every_action) == [
        "roll_back_model",
        "open_incident",
        "trigger_retraining",
        "raise_thresholds",
    ]
    assert order_actions(ACTIONS)[-1] == "do_nothing"
    assert order_actions([]) == ["do_nothing"]
    plan = plan_for(history(last_roc=0.90 * 0.9, last_pr=0.70 * 0.9), drift=True)
    assert plan.actions.index("roll_back_model") < plan.actions.index("trigger_retraining")
    assert plan.actions.index("open_incident") < plan.actions.index("trigger_retraining")


def test_plan_latency_rationale_agrees_with_its_findings() -> None:
    plan = plan_for(history(latency=[450, 420, 430, 410, 406, 439]), drift=False)
    latency = plan.findings[1]
    assert latency["points_over_limit_in_a_row"] == 6
    assert f"the last 6 points in a row ({latency['breach_hours']:.0f} h; latest 439 ms)" in (
        plan.rationale
    )


def test_plan_says_what_raise_thresholds_means() -> None:
    plan = plan_for(history(latency=[450, 410]), drift=False)
    assert plan.actions == ["raise_thresholds"]
    assert "serving capacity" in plan.action_notes["raise_thresholds"]
    assert "not the alert thresholds" in plan.action_notes["raise_thresholds"]


# --- /docs offline, and the index ---------------------------------------------------------------


def test_docs_assets_are_served_by_the_service(artifacts_dir: Path) -> None:
    with _client(artifacts_dir) as client:
        page = client.get("/docs").text
        assert "cdn" not in page.lower()
        assert "http://" not in page
        assert "https://" not in page
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert f"/docs/assets/{asset}" in page
            assert client.get(f"/docs/assets/{asset}").status_code == 200
        index = client.get("/").json()
    assert index["docs"] == "/docs"
    assert "POST /predict" in index["endpoints"]
    assert "GET /report" in index["endpoints"]


@pytest.fixture(scope="module")
def served(artifacts_dir: Path):  # type: ignore[no-untyped-def]
    server = Server(artifacts_dir, uvicorn_args=())  # uvicorn's own access log left on
    try:
        server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()


def test_docs_render_in_chromium_with_no_network_but_loopback(served: Server) -> None:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp()}",
            # Every host but the service's fails to resolve: a CDN asset would not load.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=10000",
            "--dump-dom",
            f"{served.url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Swagger UI drew the operations from /openapi.json: its script and styles came from us.
    assert "opblock-summary-path" in result.stdout
    assert 'data-path="/predict"' in result.stdout


def test_one_access_line_per_request_under_plain_uvicorn(served: Server) -> None:
    marker = "one-line-check"
    request = urllib.request.Request(f"{served.url}/health", headers={"X-Request-ID": marker})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    deadline = time.monotonic() + 5  # the line is written after the response has gone out
    while marker not in served.read_output() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and a duplicate, if any, right after it
    lines = [line for line in served.read_output().splitlines() if "/health" in line]
    assert len([line for line in lines if marker in line]) == 1
    assert not any('"GET /health HTTP/1.1"' in line for line in lines)  # uvicorn's own format


# --- training and the small things ------------------------------------------------------------


def test_train_help_explains_every_option() -> None:
    parser = train.build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help text"


def test_baseline_comparison_calls_a_clear_loss_and_a_tie() -> None:
    rng = np.random.default_rng(0)
    y = pd.Series(rng.integers(0, 2, 2000))
    good = y + rng.normal(0, 0.8, len(y))
    worse = y + rng.normal(0, 2.0, len(y))
    assert training.baseline_comparison(y, worse, good, seed=0)["verdict"] == "baseline better"
    assert training.baseline_comparison(y, good, worse, seed=0)["verdict"] == "model better"
    assert training.baseline_comparison(y, good, good, seed=0)["verdict"] == "no clear difference"


def test_training_warns_when_the_baseline_wins_on_the_challenge_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = CHALLENGE / "adult_synth.csv"
    if not data.is_file():
        pytest.skip(f"{data} is not beside the project (the challenge's files are never copied)")
    code = train.main(["--data", str(data), "--outdir", str(tmp_path / "a"), "--trials", "2"])
    out = capsys.readouterr()
    assert code == 0  # artifacts written; --strict would make it 1
    assert "baseline better" in out.out
    assert "WARNING: the logistic baseline beats the tuned model" in out.err
    strict = ["--data", str(data), "--outdir", str(tmp_path / "b"), "--trials", "2", "--strict"]
    assert train.main(strict) == 1


def test_not_ready_message_names_the_folder_to_train_into(tmp_path: Path) -> None:
    with _client(tmp_path / "custom") as client:
        detail = client.get("/ready").json()["detail"]
    assert f"--outdir {tmp_path / 'custom'}" in detail
    assert "make train" not in detail


def test_importances_table_and_chart_share_one_order(artifacts_dir: Path) -> None:
    table = pd.read_csv(artifacts_dir / "feature_importances.csv")
    assert table["mean_abs_shap"].is_monotonic_decreasing


def test_nullable_field_errors_say_null_is_allowed(artifacts_dir: Path) -> None:
    with _client(artifacts_dir) as client:
        metadata = client.get("/metadata").json()
        nullable = next(
            f["name"]
            for f in metadata["input_schema"]
            if f["nullable"] and f["used_by_model"] and "allowed_values" in f
        )
        row = client.app.state.model.predictor.bundle.sample["rows"][0]
        response = client.post("/predict", json=[{**row, nullable: "nonsense"}])
        status, body = response.status_code, response.json()
    assert status == 400
    assert body["errors"][0]["message"].endswith(", or null")


def test_demo_writes_only_ignored_paths() -> None:
    # What make demo writes (artifacts/, var/) is ignored by git: the checkout stays clean.
    written = ["artifacts/metrics.json", "artifacts/report.html", "var/live/agent_plan.yaml"]
    written += ["var/live/predictions.db", "artifacts/model_card.html"]
    result = subprocess.run(
        ["git", "check-ignore", *written], cwd=ROOT, capture_output=True, text=True
    )
    assert result.stdout.split() == written
    assert "--no-print-directory" in (ROOT / "Makefile").read_text()
