"""Shared fixtures: one small training run per test session, in a temp dir (never artifacts/), and
an environment of the suite's own: whatever the shell (or `make`, which exports
PREDICTION_LOG_DIR=var) says, tests never read or write the checkout's var/ or artifacts/."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import configuration as hypothesis_configuration
from sqlalchemy import create_engine, text

from src.settings import Settings
from src.training.threads import configure_openmp

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
CHALLENGE = ROOT.parent / "shared" / "challenge-data"
VAR = ROOT / "var"
# Few trials keep the suite fast; determinism and quality hold for any trial count.
TEST_TRIALS = 2

# Every setting from the caller's environment goes: a test states what it needs.
for _field in Settings.model_fields.values():
    if _field.alias:
        os.environ.pop(_field.alias, None)
os.environ.pop("TRAIN_THREADS", None)
# Services started by tests (in-process or as subprocesses) keep their log, registry and live
# outputs in a temp folder, never in the checkout.
_STATE = Path(tempfile.mkdtemp(prefix="test-state-"))
os.environ["PREDICTION_LOG_DIR"] = str(_STATE / "log")
os.environ["MONITOR_LIVE_DIR"] = str(_STATE / "live")
# Registering a set compiles its trees (about 10 s each); the tests that check the kept build
# turn it back on.
os.environ["REGISTRY_COMPILE"] = "false"
configure_openmp()  # as the entry points do, before LightGBM loads
# Hypothesis (under schemathesis) keeps a cache folder; keep it out of the checkout too.
hypothesis_configuration.set_hypothesis_home_dir(tempfile.mkdtemp(prefix="hypothesis-"))

from src.dataset.spec import adult_spec  # noqa: E402 - after the environment above
from src.report import documents  # noqa: E402
from src.training.train import TrainResult, train  # noqa: E402

# The Adult census spec's names, for the tests that speak of its columns (src/ never does).
ADULT = adult_spec()
FEATURES, MODEL_INPUTS, SENSITIVE = ADULT.features, ADULT.model_inputs, ADULT.sensitive
TARGET = ADULT.label.column
CSV_COLUMNS = (*FEATURES, TARGET)


def _census_layout() -> Any:
    """A census log's layout (its columns' SQL names are their own: src/loop/columns.py)."""
    from src.loop.columns import LogLayout, sql_name, value_kind

    features = ADULT.features
    return LogLayout(
        ADULT.name,
        ADULT.label.column,
        "1",
        features,
        tuple(map(sql_name, features)),
        tuple(value_kind(ADULT, n) for n in features),
        frozenset(ADULT.sensitive),
    )


census_layout = _census_layout()
# The predictions table of a census log, its feature columns included.
census_predictions = census_layout.predictions()


def adult_tables(engine: Any) -> Any:
    """The log's tables for the census (its columns claimed, as serving a census model does)."""
    from src.loop.columns import ensure_layout
    from src.loop.inserts import log_tables

    return log_tables(ensure_layout(engine, ADULT))


def adult_log(url: str, **options: Any) -> Any:
    """A prediction log for census rows (src.loop.writer.PredictionLog)."""
    from src.loop.tables import make_engine
    from src.loop.writer import PredictionLog

    engine = make_engine(url)
    try:
        tables = adult_tables(engine)
    finally:
        engine.dispose()
    return PredictionLog(url, tables=tables, **options)


def read_adult(path: Any, **options: Any) -> Any:
    """A census table read by the Adult spec (src.dataset.table.load_dataset)."""
    from src.dataset.table import load_dataset

    return load_dataset(path, ADULT, **options)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="session", autouse=True)
def _checkout_state_untouched() -> Iterator[None]:
    """The suite leaves the checkout's var/ as it found it (it used to register its own models
    in the user's registry, next to the user's champion)."""
    before = _snapshot(VAR)
    yield
    after = _snapshot(VAR)
    changed = sorted(set(before) ^ set(after) | {k for k in before if before[k] != after.get(k)})
    assert not changed, f"the tests changed the checkout's var/: {changed[:5]}"


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainResult:
    """The suite's census model: trained once per run and its trees compiled once, shared by
    the xdist workers (training is deterministic: each worker trained the same set, and each
    compiled the same trees, about 25 s of CPU apiece)."""
    import fcntl
    import json

    from src.model.artifacts import load_bundle
    from src.model.compiled import FolderBuilds
    from src.model.predictor import Predictor

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # this run's, all workers'
    outdir = shared / "session-artifacts"
    with (shared / "session-artifacts.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker trains; the others wait, then read
        if not (outdir / "manifest.json").is_file():
            train(
                DATA / "adult_synth.csv",
                outdir,
                seed=42,
                trials=TEST_TRIALS,
                documents=documents,
            )
            bundle = load_bundle(outdir)
            builds = FolderBuilds(outdir, bundle.version)
            Predictor(bundle, engine="lleaves", builds=builds)  # compiled once, kept
    metrics = json.loads((outdir / "metrics.json").read_text())
    return TrainResult(metrics=metrics, outdir=outdir)


@pytest.fixture(scope="session")
def artifacts_dir(trained: TrainResult) -> Path:
    return trained.outdir


@pytest.fixture(autouse=True)
def _metrics_folder_per_test(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Every server a test starts (in-process or not) adds up only its own processes' metrics.
    monkeypatch.setenv("METRICS_DIR", str(tmp_path / "metrics"))


@pytest.hookimpl(hookwrapper=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Iterator[Any]:
    """Schemathesis reports each API operation it fuzzes as a subtest; passed, under `-q`, each
    printed a bare `u` among the dots. A failed one is reported as before."""
    outcome = yield
    if report.when == "call" and report.passed and getattr(report, "_schemathesis_subtest", False):
        outcome.force_result(("", "", ""))


# --- the log's databases: SQLite, and PostgreSQL where one runs ----------------------------------

POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_database() -> Iterator[str]:
    try:
        admin = create_engine(
            POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:
        reason = f"no PostgreSQL at {POSTGRES_URL!r} ({type(exc).__name__})"
        pytest.skip(f"{reason}; scripts/start_postgres.sh starts one")
    name = f"test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty log database of each kind (PostgreSQL: its own database, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'predictions.db'}"
    else:
        yield from _postgres_database()
