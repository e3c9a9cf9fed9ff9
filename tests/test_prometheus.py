"""deploy/prometheus: the alerting rules pass their unit tests, and a real Prometheus scraping a
2-worker service counts exactly the requests sent (every worker added up)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_inference import Server, free_port, http

DEPLOY = ROOT / "deploy" / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"no {name} here (Debian: apt-get install prometheus); .ci/run installs it")
    return path


def test_prometheus_rules_pass_their_unit_tests() -> None:
    promtool = _tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=DEPLOY, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"], cwd=DEPLOY, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _query(url: str, expression: str) -> float | None:
    address = f"{url}/api/v1/query?query={urllib.parse.quote(expression)}"
    with urllib.request.urlopen(address, timeout=10) as response:
        result = json.loads(response.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _ready_workers(url: str) -> float | None:
    try:
        return _query(url, "count(model_ready == 1)")  # one series per worker
    except OSError:
        return None  # Prometheus still starting


def test_prometheus_counts_every_request_across_two_workers(artifacts_dir: Path) -> None:
    prometheus = _tool("prometheus")
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:3]
    server = Server(
        artifacts_dir, uvicorn_args=("--workers", "2", "--no-access-log"), LOG_REQUESTS="false"
    )
    work = Path(tempfile.mkdtemp())
    port = free_port()
    config = (DEPLOY / "prometheus.yml").read_text()
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")
    config = config.replace('"127.0.0.1:8000"', f'"127.0.0.1:{server.port}"')
    (work / "prometheus.yml").write_text(config)
    shutil.copy(DEPLOY / "rules.yml", work / "rules.yml")
    scraper = subprocess.Popen(
        [
            prometheus,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready()
        deadline = time.monotonic() + 60
        while _ready_workers(url) != 2:  # both workers up, so both take connections
            assert time.monotonic() < deadline, "the second worker never became ready"
            time.sleep(0.5)
        sent = 300
        for _ in range(sent):  # a new connection each: the kernel spreads them over the workers
            status, _ = http("POST", f"{server.url}/predict", rows)
            assert status == 200
        expression = 'sum(http_requests_total{endpoint="/predict"})'
        deadline = time.monotonic() + 60
        seen = None
        while time.monotonic() < deadline:
            try:
                seen = _query(url, expression)
            except OSError:
                seen = None  # Prometheus still starting
            if seen == sent:
                break
            time.sleep(0.5)
        assert seen == sent
        assert _query(url, "sum(predicted_rows_total)") == sent * len(rows)

    finally:
        scraper.terminate()
        scraper.wait(timeout=30)
        server.kill()
