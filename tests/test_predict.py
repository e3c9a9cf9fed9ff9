"""Batch scoring (python -m src.predict): the service's numbers and the service's refusals, a
reject never stops the run, and --log records the decisions as /predict does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from src import predict
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import DATA
from tests.conftest import census_predictions as predictions_table


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 census rows and three the service refuses (out of range, unknown, not a number)."""
    frame = pd.read_csv(DATA / "adult_synth.csv", dtype=str, keep_default_na=False).head(400)
    frame.loc[10, "age"] = "130"
    frame.loc[20, "occupation"] = "Astronaut"
    frame.loc[30, "hours_per_week"] = "forty"
    path = tmp_path_factory.mktemp("batch") / "rows.csv"
    frame.to_csv(path, index=False)
    return path


def test_batch_scores_every_row_as_the_service_does(
    table: Path, artifacts_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scored.csv"
    argv = ["--data", str(table), "--out", str(out), "--artifacts", str(artifacts_dir)]
    assert predict.main(argv) == 0
    scored = pd.read_csv(out)
    rejects = pd.read_csv(tmp_path / "scored.csv.rejects.csv")
    assert rejects["row"].tolist() == [11, 21, 31]
    assert len(scored) == 397
    assert scored["model_version"].nunique() == 1
    with TestClient(create_app(Settings(ARTIFACTS_DIR=artifacts_dir, LOG_PREDICTIONS=False))) as c:
        rows = _as_json(pd.read_csv(table, dtype=str, keep_default_na=False))
        kept = [rows[r - 1] for r in scored["row"]]
        served = c.post("/predict", json=kept).json()["predictions"]
        for row, reason in zip(rejects["row"], rejects["reason"], strict=True):
            refused = c.post("/predict", json=[rows[row - 1]]).json()["errors"]
            said = "; ".join(f"{e['field']}: {e['message']}" for e in refused)
            assert reason == said  # the service's own words
    np.testing.assert_allclose(scored["probability"], [p["probability"] for p in served], atol=1e-9)
    assert scored["class"].tolist() == [p["class"] for p in served]


def _as_json(frame: pd.DataFrame) -> list[dict[str, object]]:
    """The table's rows as a client writes them by hand: numbers where they are numbers."""

    def value(text: str) -> object:
        if text == "":
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() else number

    return [
        {k: value(v) for k, v in row.items() if k != "income_gt_50k"}
        for row in frame.to_dict(orient="records")
    ]


def test_batch_refuses_a_table_without_the_specs_columns(
    tmp_path: Path, artifacts_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("age,workclass\n39,Private\n")
    argv = ["--data", str(bad), "--out", str(tmp_path / "o.csv"), "--artifacts", str(artifacts_dir)]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "missing column(s) education" in err
    assert not (tmp_path / "o.csv").exists()


def test_batch_log_records_the_decisions_with_their_ids(
    table: Path, artifacts_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.loop.tables import make_engine, requests_table

    monkeypatch.setenv("PREDICTION_LOG_DIR", str(tmp_path / "log"))
    out = tmp_path / "scored.csv"
    argv = ["--data", str(table), "--out", str(out), "--artifacts", str(artifacts_dir), "--log"]
    assert predict.main(argv) == 0
    scored = pd.read_csv(out)
    engine = make_engine(Settings().prediction_log_url)
    with engine.connect() as connection:
        logged = connection.execute(select(func.count()).select_from(predictions_table)).scalar()
        ids = set(connection.execute(select(predictions_table.c.prediction_id)).scalars())
        paths = set(connection.execute(select(requests_table.c.path)).scalars())
    engine.dispose()
    assert logged == len(scored) == 397
    assert ids == set(scored["prediction_id"])
    assert paths == {"batch"}
