"""The log belongs to one dataset: its columns come from the spec (added by a recorded change that
goes back), another dataset is refused in one sentence, and a column's name, however hostile,
reaches SQL only mapped and quoted."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select

from src.dataset.spec import ColumnSpec, DatasetSpec, load_spec
from src.errors import RefusedError
from src.loop.columns import column_changes, drop_change, ensure_layout, log_layout, sql_name
from src.loop.inserts import log_tables
from src.loop.statistics import refresh
from src.loop.tables import hourly_bins_table, make_engine
from src.loop.windows import drift_report
from src.loop.writer import PredictionLog
from src.model.artifacts import DRIFT_REFERENCE_FILE
from src.monitoring.drift import references_from_json
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import ADULT, ROOT, adult_log

HOSTILE = 'x"; DROP TABLE predictions; --'
NAMES = [
    HOSTILE,
    "select",
    "prediction_id",  # one of the log's own columns
    "Row Count",
    "class",
    "Ünïcödé " + "long " * 14,  # past PostgreSQL's 63 bytes
]


def _spec_with(extra: list[ColumnSpec]) -> DatasetSpec:
    return ADULT.model_copy(update={"columns": (*ADULT.columns, *extra)})


def test_mapped_names_are_plain_short_and_distinct() -> None:
    mapped = [sql_name(n) for n in NAMES]
    assert all(m.isascii() and len(m.encode()) <= 63 for m in mapped)
    assert all(m == m.lower() and '"' not in m and " " not in m for m in mapped)
    assert len(set(mapped)) == len(mapped)
    assert sql_name("age") == "age"  # a plain name stays (the census log keeps its columns)
    assert sql_name("select") != "select"
    assert sql_name("prediction_id") != "prediction_id"


def test_a_new_log_takes_its_first_models_columns_and_refuses_another_dataset(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    layout = ensure_layout(engine, ADULT)
    assert (layout.dataset, layout.features) == (ADULT.name, ADULT.features)
    other = load_spec(ROOT / "src" / "dataset" / "adult.yaml").model_copy(update={"name": "loans"})
    with pytest.raises(RefusedError) as refused:
        ensure_layout(engine, other)
    sentence = str(refused.value)
    assert "'adult-income'" in sentence
    assert "'loans'" in sentence
    assert "DATABASE_URL" in sentence
    assert ". " not in sentence
    assert "\n" not in sentence
    positive = ADULT.model_copy(update={"label": ADULT.label.model_copy(update={"positive": 0})})
    with pytest.raises(RefusedError, match="label income_gt_50k = 0"):
        ensure_layout(engine, positive)
    engine.dispose()


def test_a_spec_that_adds_columns_adds_them_by_a_change_that_goes_back(database_url: str) -> None:
    engine = make_engine(database_url)
    ensure_layout(engine, ADULT)
    wider = _spec_with([ColumnSpec(name="tenure years", kind="numeric", min=0, max=60)])
    layout = ensure_layout(engine, wider)
    column = layout.column_of("tenure years")
    assert column in {c["name"] for c in inspect(engine).get_columns("predictions")}
    changes = column_changes(engine)
    assert [c["action"] for c in changes] == ["add", "add"]
    assert changes[1]["columns"] == [{"name": "tenure years", "sql_name": column, "kind": "number"}]
    assert drop_change(engine, changes[1]["id"]) == ["tenure years"]
    assert column not in {c["name"] for c in inspect(engine).get_columns("predictions")}
    assert log_layout(engine).features == ADULT.features
    with pytest.raises(RefusedError, match="made the log"):
        drop_change(engine, changes[0]["id"])
    engine.dispose()


def _hostile_table(folder: Path) -> tuple[Path, DatasetSpec]:
    """A table whose column names try every trick, and its spec as infer drafts it."""
    import subprocess
    import sys

    rng = np.random.default_rng(4)
    rows = 1500
    frame = pd.DataFrame(
        {
            HOSTILE: rng.normal(0, 1, rows).round(3),
            "select": rng.choice(["a", "b", "c"], rows),
            "prediction_id": rng.integers(0, 50, rows).astype(float),
            "Row Count": rng.integers(0, 100, rows),
            "class": rng.choice(["x", "y"], rows),
            NAMES[5]: rng.normal(5, 2, rows).round(2),
        }
    )
    signal = frame[HOSTILE] + (frame["select"] == "a") + rng.normal(0, 1, rows)
    frame["outcome"] = np.where(signal > 0.5, "hit", "miss")
    path = folder / "hostile.csv"
    frame.to_csv(path, index=False)
    spec = folder / "hostile.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "src.dataset", "infer", "--data", str(path), "--label",
         "outcome", "--positive", "hit", "--sensitive", "class", "--out", str(spec)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path, load_spec(spec)


@pytest.fixture(scope="module")
def hostile_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSpec, Path]:
    from src.training.search import DEFAULT_PARAMS
    from src.training.train import train

    folder = tmp_path_factory.mktemp("hostile")
    data, spec = _hostile_table(folder)
    columns = [
        c.model_copy(update={"unknown": "missing"}) if c.name == "select" else c
        for c in spec.columns
    ]
    spec = spec.model_copy(update={"columns": tuple(columns)})
    # 40 trees, not the default 300: the names reach the compiled trees all the same, and
    # lleaves compiles them in a second instead of about 14.
    params = {**DEFAULT_PARAMS, "n_estimators": 40}
    result = train(data, folder / "set", spec=spec, trials=0, params=params)
    return data, spec, result.outdir


def test_hostile_column_names_are_logged_counted_and_drop_nothing(
    hostile_set: tuple[Path, DatasetSpec, Path], database_url: str, tmp_path: Path
) -> None:
    _, spec, folder = hostile_set
    rows = json.loads((folder / "sample_rows.json").read_text())["rows"]
    settings = Settings(
        ARTIFACTS_DIR=folder,
        DATABASE_URL=database_url,
        PREDICTION_LOG_DIR=tmp_path,
        ACCEPT_EVENT_TIME=True,
    )
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    with TestClient(create_app(settings)) as client:
        for batch in (rows[:1], rows[:20]):  # row by row, and as columns
            answer = client.post("/predict", json=batch, headers={"X-Event-Time": hour.isoformat()})
            assert answer.status_code == 200, answer.text
            answer = client.post("/predict", json=batch)
            assert answer.status_code == 200, answer.text
        outside = [{**rows[0], "select": "never seen"}, {**rows[1], "select": "nor this"}]
        for batch in (outside[:1], outside * 10):  # row by row, and as columns
            answer = client.post("/predict", json=batch, headers={"X-Event-Time": hour.isoformat()})
            assert answer.status_code == 200, answer.text  # served: `unknown: missing`
        assert 'served_unknown_values_total{column="select"} 21.0' in client.get("/metrics").text
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        assert any(HOSTILE in schema.get("properties", {}) for schema in schemas.values())
        _wait_written(client)
    engine = make_engine(database_url)
    layout = log_layout(engine)
    assert set(layout.features) == set(spec.features)
    table = layout.predictions()
    with engine.connect() as connection:
        logged = connection.execute(select(func.count()).select_from(table)).scalar()
        hostile = connection.execute(select(table.c[layout.column_of(HOSTILE)])).scalars().all()
    assert logged == 42 + 21
    assert sorted(v for v in hostile if v is not None)  # the values themselves, stored
    references = references_from_json((folder / DRIFT_REFERENCE_FILE).read_text())
    refresh(engine, references, now=datetime.now(UTC), label_delay=timedelta(0))
    with engine.connect() as connection:
        features = set(connection.execute(select(hourly_bins_table.c.feature)).scalars())
    assert {layout.column_of(n) for n in spec.features} <= features  # every column counted
    drift = drift_report(engine, references, hours=24 * 7, threshold=0.2)
    select_drift = drift["details"]["select"]
    assert select_drift["unseen_categories"] == ["never seen", "nor this"]  # most rows first
    assert select_drift["unseen_count"] == 21
    assert "predictions" in inspect(engine).get_table_names()  # nothing dropped
    engine.dispose()


def _wait_written(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/ready").json()["prediction_log"].get("buffered_bytes", 1):
        assert time.monotonic() < deadline, "the log did not catch up"
        time.sleep(0.05)


def test_a_model_of_another_dataset_is_refused_at_start(
    hostile_set: tuple[Path, DatasetSpec, Path], tmp_path: Path
) -> None:
    _, _, folder = hostile_set
    url = f"sqlite:///{tmp_path / 'census.db'}"
    engine = make_engine(url)
    ensure_layout(engine, ADULT)  # the census's log
    engine.dispose()
    settings = Settings(ARTIFACTS_DIR=folder, DATABASE_URL=url, PREDICTION_LOG_DIR=tmp_path)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        reason = ready.json()["detail"]
        assert "'adult-income'" in reason
        assert "'hostile'" in reason
        assert "DATABASE_URL" in reason
        assert client.post("/predict", json=[{}]).status_code == 503


def test_registering_a_set_of_another_dataset_is_refused(
    hostile_set: tuple[Path, DatasetSpec, Path], artifacts_dir: Path, tmp_path: Path
) -> None:
    from src.registry.core import Registry

    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    registry = Registry(engine, tmp_path / "store")
    registry.register(artifacts_dir, actor="test")
    with pytest.raises(RefusedError, match="'adult-income'"):
        registry.register(hostile_set[2], actor="test")
    engine.dispose()


def test_the_writer_takes_new_columns_when_a_model_adds_them(tmp_path: Path) -> None:
    from src.loop.handoff import Served
    from src.loop.ids import new_request_key

    url = f"sqlite:///{tmp_path / 'p.db'}"
    log: PredictionLog = adult_log(url).start()
    engine = make_engine(url)
    wider = _spec_with([ColumnSpec(name="tenure years", kind="numeric", min=0, max=60)])
    log.use_tables(log_tables(ensure_layout(engine, wider)))
    row = {name: None for name in ADULT.features} | {"age": 40, "tenure years": 7}
    served = Served.of(json.dumps([row]).encode(), np.array([0.3]), "v", 0.5, new_request_key())
    log.record("r", datetime.now(UTC), "/predict", 200, 1.0, served)
    assert log.flush()
    log.close()
    table = log_layout(engine).predictions()
    with engine.connect() as connection:
        tenure = connection.execute(select(table.c[sql_name("tenure years")])).scalars().all()
    assert tenure == [7.0]
    engine.dispose()


def test_the_migrate_cli_lists_the_changes_and_takes_one_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.loop import migrate

    url = f"sqlite:///{tmp_path / 'p.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert migrate.main(["columns"]) == 0
    assert "no dataset yet" in capsys.readouterr().out
    engine = make_engine(url)
    ensure_layout(engine, ADULT)
    ensure_layout(engine, _spec_with([ColumnSpec(name="tenure years", kind="numeric")]))
    engine.dispose()
    assert migrate.main(["columns"]) == 0
    listed = capsys.readouterr().out
    assert f"dataset {ADULT.name}: label income_gt_50k = 1" in listed
    assert "change 2 at" in listed
    assert f"tenure years ({sql_name('tenure years')})" in listed
    assert migrate.main(["drop-columns", "2"]) == 0
    assert "tenure years" in capsys.readouterr().out
    assert migrate.main(["drop-columns", "1"]) == 1
    assert "made the log" in capsys.readouterr().err
