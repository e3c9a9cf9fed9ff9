"""The spec's inference test, for real: uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHALLENGE, ROOT

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Server:
    """uvicorn serving `artifacts` on 127.0.0.1; stopped with SIGTERM like any process manager."""

    def __init__(
        self,
        artifacts: Path | None,
        *,
        uvicorn_args: tuple[str, ...] = ("--no-access-log",),
        **env: str,
    ) -> None:
        """`artifacts` None: no ARTIFACTS_DIR, so the service serves the registry's champion."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: nobody reads a pipe during a load test, and a full pipe would block
        # the server's log writes (as it would block any process's).
        self.output = tempfile.NamedTemporaryFile(prefix="uvicorn-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "src.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *uvicorn_args,
            ],
            cwd=ROOT,
            env={**os.environ, **({"ARTIFACTS_DIR": str(artifacts)} if artifacts else {}), **env},
            stdout=self.output,
            stderr=subprocess.STDOUT,
            # Its own process group: kill() ends the workers and log writers too, never orphans.
            start_new_session=True,
        )

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"uvicorn exited: {self.read_output()}")
            try:
                status, body = http("GET", f"{self.url}/ready")
                if status == 200:
                    return body
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready in time")

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return code, self.read_output()

    def kill(self) -> None:
        """SIGKILL to the server and every process it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def read_output(self) -> str:
        return Path(self.output.name).read_text()


@pytest.fixture(scope="module")
def server(artifacts_dir: Path) -> Iterator[Server]:
    running = Server(artifacts_dir)
    try:
        running.wait_ready()
        yield running
    finally:
        if running.process.poll() is None:
            running.kill()


def _two_sample_rows(artifacts_dir: Path) -> list[dict[str, Any]]:
    # The challenge's own sample.json when it sits beside the project (it is not ours to copy).
    published = CHALLENGE / "sample.json"
    if published.is_file():
        return json.loads(published.read_text())
    return json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:2]


def test_predict_two_sample_rows_over_http(server: Server, artifacts_dir: Path) -> None:
    assert http("GET", f"{server.url}/health") == (200, {"status": "ok"})
    rows = _two_sample_rows(artifacts_dir)
    status, body = http("POST", f"{server.url}/predict", rows)
    assert status == 200
    predictions = body["predictions"]
    assert len(predictions) == 2
    for p in predictions:
        assert 0.0 <= p["probability"] <= 1.0
        assert p["class"] == int(p["probability"] >= body["threshold"])


def test_bad_request_over_http_is_a_clear_400(server: Server) -> None:
    status, body = http("POST", f"{server.url}/predict", [{"age": "old"}])
    assert status == 400
    assert {"row": 0, "field": "age"}.items() <= body["errors"][0].items()


def test_server_shuts_down_cleanly_and_logs_json(artifacts_dir: Path) -> None:
    running = Server(artifacts_dir)
    running.wait_ready()
    http("POST", f"{running.url}/predict", _two_sample_rows(artifacts_dir))
    code, output = running.stop()
    # uvicorn finishes in-flight work, runs the lifespan shutdown, then re-raises SIGTERM so
    # process managers see how it ended.
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in output
    access = [json.loads(line) for line in output.splitlines() if '"service.access"' in line]
    predict = [e for e in access if e["path"] == "/predict"]
    assert predict[0]["status"] == 200
    assert predict[0]["rows"] == 2
    assert predict[0]["request_id"]
    assert "United-States" not in output  # no row values in the log
