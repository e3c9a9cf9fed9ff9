"""Security: no outbound network from the project, no secrets in the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tests.conftest import ROOT

# Runs the main job end to end in a fresh interpreter whose audit hook records every attempt to
# resolve or reach a host other than this one. Audit hooks see sockets opened by any library.
WATCHED_DEMO = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path

    attempts = []
    LOCAL = {"127.0.0.1", "::1", "localhost", "testserver"}

    def hook(event, args):
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            address = args[1] if len(args) > 1 else None
            if isinstance(address, tuple) and address and address[0] not in LOCAL:
                attempts.append((event, str(address)))
        elif event == "socket.getaddrinfo" and args and args[0] not in LOCAL:
            attempts.append((event, str(args[0])))

    sys.addaudithook(hook)

    from fastapi.testclient import TestClient
    from src import agent_monitor, drift, make_data, train
    from src.service.factory import create_app
    from src.settings import Settings

    work = Path(tempfile.mkdtemp())
    assert make_data.main(["--out-dir", str(work / "data")]) == 0
    out = work / "a"
    data = "data/adult_synth.csv"
    assert train.main(["--data", data, "--outdir", str(out), "--trials", "1"]) == 0
    ref, new = "data/adult_ref_sample.csv", "data/adult_shifted_sample.csv"
    assert drift.main(["--ref", ref, "--new", new, "--out", str(out / "drift.json")]) == 0
    history, latest = "data/metrics_history.jsonl", "data/drift_latest.json"
    args = ["--metrics", history, "--drift", latest, "--out", str(out / "plan.yaml")]
    assert agent_monitor.main(args) == 0
    rows = json.loads((work / "a" / "sample_rows.json").read_text())["rows"]
    with TestClient(create_app(Settings(ARTIFACTS_DIR=work / "a"))) as client:
        assert client.post("/predict", json=rows).status_code == 200
        assert client.post("/monitor").status_code == 200
        assert client.get("/metrics").status_code == 200
    print("ATTEMPTS", json.dumps(attempts))
    """
)


def test_the_demo_makes_no_outbound_network_call() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": tempfile.mkdtemp(prefix="home-"),
        "PYTHONPATH": str(ROOT),
        "PREDICTION_LOG_DIR": os.environ["PREDICTION_LOG_DIR"],
        "REGISTRY_COMPILE": "false",  # the service compiles the same trees once below
    }
    result = subprocess.run(
        [sys.executable, "-c", WATCHED_DEMO],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("ATTEMPTS"))
    assert line == "ATTEMPTS []", line


SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "OpenAI-style key": re.compile(r"sk-[A-Za-z0-9]{32,}"),
    "GitHub token": re.compile(r"gh[pousr]_[A-Za-z0-9]{36}"),
    "Google API key": re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
    "assigned password": re.compile(
        r"(?i)(password|passwd|secret|api_key)\s*[:=]\s*['\"][^'\"]{8,}['\"]"
    ),
}


def test_no_secrets_in_tracked_files() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    findings = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".csv", ".data", ".test", ".gif", ".cast"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        findings += [
            f"{name}: {kind}" for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)
        ]
    assert findings == []


def test_the_llm_key_comes_only_from_the_environment() -> None:
    source = (ROOT / "src" / "agent" / "llm.py").read_text()
    assert 'os.environ.get("AGENT_LLM_API_KEY")' in source
    assert "repr=False" in source  # the config never prints the key
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "AGENT_LLM_API_KEY" not in workflow


def test_static_security_rules_are_on() -> None:
    config = (ROOT / "pyproject.toml").read_text()
    assert '"S"' in config  # ruff's flake8-bandit rules run in `make lint`
    assert Path(ROOT / ".ci" / "run").read_text().count("make lint") == 1
