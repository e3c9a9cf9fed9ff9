"""Shared fixtures: one small training run per test session, in a temp dir (never artifacts/)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import configuration as hypothesis_configuration

from src.train import TrainResult, train

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
CHALLENGE = ROOT.parent / "shared" / "challenge-data"
# Few trials keep the suite fast; determinism and quality hold for any trial count.
TEST_TRIALS = 2
# Services started by tests (in-process or as subprocesses) log predictions into a temp folder,
# never into the checkout.
os.environ.setdefault("PREDICTION_LOG_DIR", tempfile.mkdtemp(prefix="prediction-log-"))
# Registering a set compiles its trees (about 10 s each); the tests that check the kept build
# turn it back on.
os.environ.setdefault("REGISTRY_COMPILE", "false")
# Hypothesis (under schemathesis) keeps a cache folder; keep it out of the checkout too.
hypothesis_configuration.set_hypothesis_home_dir(tempfile.mkdtemp(prefix="hypothesis-"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    outdir = tmp_path_factory.mktemp("artifacts")
    return train(DATA / "adult_synth.csv", outdir, seed=42, trials=TEST_TRIALS)


@pytest.fixture(scope="session")
def artifacts_dir(trained: TrainResult) -> Path:
    return trained.outdir


@pytest.fixture(autouse=True)
def _metrics_folder_per_test(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Every server a test starts (in-process or not) adds up only its own processes' metrics.
    monkeypatch.setenv("METRICS_DIR", str(tmp_path / "metrics"))
