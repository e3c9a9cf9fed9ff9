"""`make demo DATA=... SPEC=...` on tables the project was not written for, as a new user runs it:
infer drafts the spec, then the whole loop runs (train, drift, mitigations, the served loop with
its replay and labels, the agent, the gate, and the report), and `make serve` afterwards serves
that table's champion. Each takes one to two minutes: `make test-demos` (and CI) runs them, not
`make test`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests import tables
from tests.conftest import ROOT

pytestmark = pytest.mark.demo

STEPS = ("train", "register", "drift", "fairness", "loop", "report")


def _table(name: str, folder: Path) -> tuple[Path, dict[str, Any]]:
    if name == "adversarial":
        return tables.adversarial_table(folder)
    return tables.outside_table(name, folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make(target: str, folder: Path, data: Path, spec: Path, **extra: str) -> list[str]:
    return [
        "make",
        target,
        f"DATA={data}",
        f"SPEC={spec}",
        f"ARTIFACTS={folder / 'set'}",
        f"PREDICTION_LOG_DIR={folder / 'var'}",
        "TRIALS=0",
        *(f"{k}={v}" for k, v in extra.items()),
    ]


def _environment() -> dict[str, str]:
    hidden = ("DATABASE_URL", "ARTIFACTS_DIR", "SERVICE_TOKEN", "ALERT_WEBHOOK_URL")
    return {k: v for k, v in os.environ.items() if k not in hidden}


@pytest.mark.parametrize("name", ["arrests", "credit", "adversarial"])
def test_make_demo_runs_the_whole_loop_on_a_table(name: str, tmp_path: Path) -> None:
    from src.dataset.spec import load_spec

    data, told = _table(name, tmp_path)
    spec_path = tmp_path / f"{name}.yaml"
    infer = [sys.executable, "-m", "src.dataset", "infer", "--data", str(data)]
    infer += ["--label", told["label"], "--positive", told["positive"], "--out", str(spec_path)]
    infer += ["--sensitive", *told["sensitive"]]
    subprocess.run(infer, cwd=ROOT, check=True, capture_output=True, timeout=120)
    spec = load_spec(spec_path)

    demo = subprocess.run(
        _make("demo", tmp_path, data, spec_path),
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    timed = [line.split()[0] for line in out.splitlines() if line.endswith(" s") and line.strip()]
    for step in STEPS:  # progress lines, and each step's time at the end
        assert f"== make demo: {step}" in out
        assert step in timed
    var = tmp_path / "var"
    plan = (var / "live" / "agent_plan.yaml").read_text()
    assert "status: critical" in plan  # the planted change was seen, and called for action
    database = create_engine(f"sqlite:///{var / 'predictions.db'}")
    with database.connect() as connection:
        dataset = connection.execute(text("SELECT name FROM log_dataset")).scalar()
        logged = connection.execute(text("SELECT count(*) FROM predictions")).scalar()
        judged = connection.execute(
            text("SELECT kind FROM model_events WHERE kind IN ('promoted', 'refused')")
        ).scalars()
        judged = list(judged)
    database.dispose()
    assert dataset == spec.name  # the log is the table's
    assert logged >= 192 * 1000
    assert judged, "the agent's challenger never met the gate"  # passed it, or refused with reasons
    if "promoted" in judged:
        assert "rolled back" in out  # the swap, then the rollback
    report = (tmp_path / "set" / "report.html").read_text()
    assert spec.title_or_name in report
    assert "adult" not in report.lower()

    port = _free_port()
    serve = subprocess.Popen(
        _make("serve", tmp_path, data, spec_path, PORT=str(port)),
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        metadata = _wait_for(f"http://127.0.0.1:{port}/metadata")
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)
    served = {field["name"] for field in metadata["input_schema"]}
    assert served == set(spec.accepted)  # make serve serves the table's champion


def _wait_for(url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read())
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.5)
