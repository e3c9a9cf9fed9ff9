"""The data generator: byte-identical output, and the properties data/README.md promises."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from src import make_data as make_data_cli
from src.dataset import adult as make_data
from src.monitoring.drift import compute_drift
from tests.conftest import ADULT, CSV_COLUMNS, DATA, FEATURES
from tests.conftest import read_adult as load_dataset


def test_make_data_regenerates_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    assert make_data_cli.main(["--raw-dir", str(DATA / "raw"), "--out-dir", str(tmp_path)]) == 0
    for name in make_data.OUTPUTS:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_synth_is_drawn_from_adult_data_only() -> None:
    synth = pd.read_csv(DATA / "adult_synth.csv")
    assert list(synth.columns) == list(CSV_COLUMNS)
    assert len(synth) == make_data.SYNTH_ROWS
    key = list(CSV_COLUMNS)
    train = make_data.read_uci(DATA / "raw" / "adult.data").drop_duplicates()
    test = make_data.read_uci(DATA / "raw" / "adult.test").drop_duplicates()
    in_train = synth.merge(train, on=key, how="left", indicator=True)["_merge"]
    assert (in_train == "both").all()
    # adult.test rows that are not also in adult.data: none of them may appear.
    test_only = test.merge(train, on=key, how="left", indicator=True)
    test_only = test_only[test_only["_merge"] == "left_only"].drop(columns="_merge")
    assert synth.merge(test_only, on=key).empty
    # Missing values stay empty cells, for the pipeline's imputation to handle.
    raw_text = (DATA / "adult_synth.csv").read_text()
    assert ",," in raw_text
    assert "?" not in raw_text
    assert set(synth["income_gt_50k"]) == {0, 1}


def test_shifted_sample_flags_the_planted_features_and_only_them() -> None:
    ref = load_dataset(DATA / "adult_ref_sample.csv").features
    shifted = load_dataset(DATA / "adult_shifted_sample.csv").features
    assert len(ref) == len(shifted) == make_data.SAMPLE_ROWS
    report = compute_drift(ADULT, ref, shifted)
    flagged = {name for name, d in report.details.items() if d["drifted"]}
    assert flagged == set(make_data.PLANTED_SHIFTS)
    committed = json.loads((DATA / "drift_latest.json").read_text())
    assert committed["features"] == report.features
    assert set(committed["features"]) == set(FEATURES)


def test_metrics_history_is_200_hourly_points_with_seven_healthy_days() -> None:
    lines = (DATA / "metrics_history.jsonl").read_text().splitlines()
    points = [json.loads(line) for line in lines]
    assert len(points) == make_data.HISTORY_POINTS
    assert set(points[0]) == {"ts", "roc_auc", "pr_auc", "acc", "latency_p95_ms", "error_rate"}
    ts = pd.to_datetime([p["ts"] for p in points])
    assert (ts[1:] - ts[:-1] == pd.Timedelta(hours=1)).all()
    assert ts[make_data.HEALTHY_POINTS - 1] - ts[0] >= pd.Timedelta(days=7) - pd.Timedelta(hours=1)
