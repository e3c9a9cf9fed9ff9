"""Static checks that belong to the test suite: the Dockerfile and the CI workflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], cwd=ROOT, capture_output=True, text=True)


def test_dockerfile_is_hadolint_clean() -> None:
    result = _run("hadolint", "docker/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_is_actionlint_clean() -> None:
    result = _run("actionlint", ".github/workflows/ci.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_is_least_privilege_and_current() -> None:
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "permissions:\n  contents: read" in text
    assert "actions/checkout@v6" in text
    assert "make lint test" in text
    assert "secrets." not in text


def test_image_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "USER 10001" in text
    assert "HEALTHCHECK" in text
    assert text.index("COPY requirements.txt") < text.index("COPY src/")
