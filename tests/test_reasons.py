"""Reasons for each decision: exact contributions served with /predict?reasons=K (they and the
base value add up to the score), summarised in the set and the card, and watched for drift."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src import agent_monitor, monitor_window
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import ADULT, DATA, read_adult


@pytest.fixture(scope="module")
def client(artifacts_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(ARTIFACTS_DIR=artifacts_dir, LOG_PREDICTIONS=False))) as c:
        yield c


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _rows(schema: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Valid rows of any model: every field from its domain, null where nullable."""
    fields = {}
    for field in schema:
        if "allowed_values" in field:
            value: st.SearchStrategy[Any] = st.sampled_from(field["allowed_values"])
        elif field["type"] == "number" or field["type"] == "integer":
            low, high = field.get("minimum") or 0, field.get("maximum") or 1e6
            value = st.integers(int(low), int(min(high, 10**7)))
        else:
            continue
        if field["nullable"]:
            value = st.none() | value
        fields[field["name"]] = value
    return st.lists(st.fixed_dictionaries(fields), min_size=1, max_size=30)


def test_reasons_add_up_to_the_score_for_every_valid_row(client: TestClient) -> None:
    """The property: contributions + base value = the log-odds of the served probability,
    within 1e-6, on random valid rows (categories and missing values included), one row at a
    time (row-wise encoding) and in batches (column-wise)."""
    schema = client.get("/metadata").json()["input_schema"]
    inputs = len(ADULT.model_inputs)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=_rows(schema))
    def check(rows: list[dict[str, Any]]) -> None:
        answer = client.post(f"/predict?reasons={inputs}", json=rows)
        assert answer.status_code == 200, answer.text
        for prediction in answer.json()["predictions"]:
            total = prediction["base_value"] + sum(r["contribution"] for r in prediction["reasons"])
            assert abs(total - _logit(prediction["probability"])) < 1e-6
            assert len(prediction["reasons"]) == inputs

    check()


def test_reasons_speak_the_users_columns_and_never_a_sensitive_one(client: TestClient) -> None:
    body = _sample(client)
    plain = client.post("/predict", json=body).json()["predictions"]
    answer = client.post("/predict?reasons=3", json=body).json()["predictions"]
    assert [p["probability"] for p in answer] == [p["probability"] for p in plain]
    assert all("reasons" not in p and "base_value" not in p for p in plain)  # the fast path
    for prediction, row in zip(answer, body, strict=True):
        reasons = prediction["reasons"]
        assert len(reasons) == 3
        sizes = [abs(r["contribution"]) for r in reasons]
        assert sizes == sorted(sizes, reverse=True)
        for reason in reasons:
            assert reason["column"] in ADULT.model_inputs  # a column of the spec, not "cat__x_1"
            assert reason["column"] not in ADULT.sensitive
            assert reason["value"] == row.get(reason["column"])
    zero = client.post("/predict?reasons=0", json=body[:1]).json()["predictions"][0]
    assert "reasons" not in zero


def _sample(client: TestClient) -> list[dict[str, Any]]:
    return _census_rows(20)


@pytest.mark.parametrize("value", ["-1", "13", "1.5", "three", "", "99999999999999999999"])
def test_reasons_out_of_range_is_a_400_naming_the_parameter(client: TestClient, value: str) -> None:
    answer = client.post(f"/predict?reasons={value}", json=_sample(client)[:1])
    assert answer.status_code == 400
    body = answer.json()
    most = len(ADULT.model_inputs)
    assert body["detail"].startswith(f"reasons must be an integer from 0 to {most}")
    assert body["errors"][0]["field"] == "reasons"


def test_openapi_documents_reasons_with_its_range(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    parameter = next(p for p in operation["parameters"] if p["name"] == "reasons")
    assert parameter["in"] == "query"
    assert parameter["schema"] == {
        "type": "integer",
        "minimum": 0,
        "default": 0,
        "maximum": len(ADULT.model_inputs),
    }


def test_the_set_holds_the_summary_and_the_gaps_add_up(artifacts_dir: Path) -> None:
    summary = pd.read_csv(artifacts_dir / "shap_summary.csv")
    assert list(summary.columns) == ["column", "mean_abs_contribution"]
    assert set(summary["column"]) == set(ADULT.model_inputs)
    assert summary["mean_abs_contribution"].is_monotonic_decreasing
    importances = pd.read_csv(artifacts_dir / "feature_importances.csv").set_index("feature")
    for row in summary.itertuples():
        assert row.mean_abs_contribution == pytest.approx(
            importances.loc[row.column, "mean_abs_shap"]
        )
    attributions = json.loads((artifacts_dir / "metrics.json").read_text())["attributions"]
    assert set(attributions["by_group"]) == set(ADULT.fairness_attributes)
    for block in attributions["by_group"].values():
        groups = block["groups"]
        reference = groups[block["reference_group"]]
        for name, group in groups.items():
            # Exact: the differences of mean contributions add up to the gap in mean score.
            differences = sum(
                group["contributions"][c] - reference["contributions"][c]
                for c in group["contributions"]
            )
            assert differences == pytest.approx(group["mean_score"] - reference["mean_score"])
            if name != block["reference_group"]:
                assert len(block["gap_sources"][name]) == 3
    card = (artifacts_dir / "model_card.html").read_text()
    assert '<section id="reasons">' in card
    assert "carried most by" in card


# --- attribution drift in the monitoring window -------------------------------------------------


def _replay(client: TestClient, rows: list[dict[str, Any]]) -> None:
    """Requests of 50 rows, a minute apart, over the hours before the last."""
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    for n, start in enumerate(range(0, len(rows), 50)):
        stamp = (first + timedelta(minutes=n)).isoformat()
        answer = client.post(
            "/predict", json=rows[start : start + 50], headers={"X-Event-Time": stamp}
        )
        assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30
    while client.get("/ready").json()["prediction_log"].get("buffered_bytes", 1):
        assert time.monotonic() < deadline, "the log did not catch up"
        time.sleep(0.05)


def _plan(artifacts: Path, rows: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'log.db'}"
    app_settings = Settings(
        ARTIFACTS_DIR=artifacts,
        DATABASE_URL=url,
        PREDICTION_LOG_DIR=folder,
        ACCEPT_EVENT_TIME=True,
    )
    with TestClient(create_app(app_settings)) as replaying:
        _replay(replaying, rows)
    live = folder / "live"
    args = ["--database-url", url, "--reference", str(artifacts), "--out-dir", str(live)]
    assert monitor_window.main([*args, "--label-delay-hours", "0", "--min-labelled", "1"]) == 0
    plan = folder / "plan.yaml"
    judged = ["--metrics", str(live / "metrics_history.jsonl"), "--drift"]
    assert agent_monitor.main([*judged, str(live / "drift_report.json"), "--out", str(plan)]) == 0
    return yaml.safe_load(plan.read_text())


def _census_rows(n: int) -> list[dict[str, Any]]:
    from src.dataset.table import request_rows

    features = read_adult(DATA / "adult_ref_sample.csv").features
    rng = np.random.default_rng(3)
    picked = features.iloc[rng.integers(0, len(features), n)].reset_index(drop=True)
    return request_rows(ADULT, picked[list(ADULT.model_inputs)])


def _attribution_finding(plan: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in plan["findings"] if "attribution_rows" in f)


def test_a_shifted_input_is_attribution_drift_in_the_plan_and_no_shift_is_none(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    rows = _census_rows(3000)
    steady = _attribution_finding(_plan(artifacts_dir, rows, tmp_path / "steady"))
    assert steady["attribution_drift"] == []
    assert steady["attribution_rows"] == 2000
    shifted_rows = [{**row, "capital_gain": 15024} for row in rows]  # one input moves
    shifted = _attribution_finding(_plan(artifacts_dir, shifted_rows, tmp_path / "shifted"))
    moved = shifted["attribution_drift"]
    assert moved[0]["column"] == "capital_gain"
    assert moved[0]["window_share"] - moved[0]["training_share"] > 0.10
