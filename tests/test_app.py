"""The service in-process (TestClient runs the lifespan): endpoints, the input contract, limits."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from src.errors import ArtifactError
from src.model.artifacts import MANIFEST_FILE, MODEL_FILE, load_bundle, model_version
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import MODEL_INPUTS, SENSITIVE


def _client(artifacts: Path, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(ARTIFACTS_DIR=artifacts, **settings)))


@pytest.fixture(scope="module")
def client(artifacts_dir: Path) -> Iterator[TestClient]:
    with _client(artifacts_dir, PREDICT_MAX_ROWS=50, PREDICT_MAX_BODY_BYTES=64 * 1024) as c:
        yield c


@pytest.fixture(scope="module")
def rows(artifacts_dir: Path) -> list[dict[str, Any]]:
    return json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"]


@pytest.fixture
def row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(dict(r) for r in rows if r["workclass"] is not None)


def _errors(response: Any) -> list[tuple[int | None, str | None, str]]:
    return [(e["row"], e["field"], e["message"]) for e in response.json()["errors"]]


def test_health_is_the_spec_body(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_reports_the_loaded_model(client: TestClient) -> None:
    body = client.get("/ready").json()
    assert body["status"] == "ready"
    assert body["engine"] == "lleaves"


def test_metadata_describes_model_and_schema(client: TestClient, artifacts_dir: Path) -> None:
    body = client.get("/metadata").json()
    manifest = json.loads((artifacts_dir / MANIFEST_FILE).read_text())
    metrics = json.loads((artifacts_dir / "metrics.json").read_text())
    assert body["data_sha256"] == manifest["data_sha256"]
    assert body["model_version"] == model_version(manifest)  # the hash of the files' hashes
    assert body["mitigation"]["name"] == "none"  # the plain model unless training asked
    assert body["trained_at"] == manifest["created_at"]
    assert body["validation_metrics"]["roc_auc"] == metrics["roc_auc"]
    assert body["decision_threshold"] == 0.5
    fields = {f["name"]: f for f in body["input_schema"]}
    assert set(fields) == set(MODEL_INPUTS) | set(SENSITIVE)
    assert "Private" in fields["workclass"]["allowed_values"]
    assert "missing" not in fields["workclass"]["allowed_values"]
    assert fields["age"]["minimum"] == 0
    assert not fields["sex"]["used_by_model"]


def test_predict_returns_one_prediction_per_row_in_order(
    client: TestClient, rows: list[dict[str, Any]], artifacts_dir: Path
) -> None:
    expected = json.loads((artifacts_dir / "sample_rows.json").read_text())["probabilities"]
    response = client.post("/predict", json=rows)
    assert response.status_code == 200
    body = response.json()
    assert body["threshold"] == 0.5
    assert body["model_version"] == client.get("/ready").json()["model_version"]
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == pytest.approx(expected, abs=1e-9)
    assert [p["class"] for p in body["predictions"]] == [int(p >= 0.5) for p in probabilities]


def test_predict_ignores_sensitive_fields(client: TestClient, row: dict[str, Any]) -> None:
    whole = client.post("/predict", json=[row]).json()["predictions"]
    bare = {k: v for k, v in row.items() if k not in SENSITIVE}
    other = {**row, "sex": "Female" if row["sex"] == "Male" else "Male", "race": "Other"}

    def answers(body: list[dict[str, Any]]) -> list[tuple[float, int]]:
        predictions = client.post("/predict", json=body).json()["predictions"]
        return [(p["probability"], p["class"]) for p in predictions]  # ids differ, by design

    assert answers([bare]) == answers([other]) == [(p["probability"], p["class"]) for p in whole]


def test_predict_accepts_null_where_training_had_missing_values(
    client: TestClient, row: dict[str, Any]
) -> None:
    response = client.post("/predict", json=[{**row, "workclass": None, "occupation": None}])
    assert response.status_code == 200


BAD_ROWS = {
    "missing_field": (
        lambda r: {k: v for k, v in r.items() if k != "age"},
        "age",
        "Field required",
    ),
    "boolean_for_number": (lambda r: {**r, "age": True}, "age", "valid number"),
    "string_for_number": (
        lambda r: {**r, "hours_per_week": "40"},
        "hours_per_week",
        "valid number",
    ),
    "too_old": (lambda r: {**r, "age": 121}, "age", "less than or equal to 120"),
    "negative_gain": (lambda r: {**r, "capital_gain": -1}, "capital_gain", "greater than or equal"),
    "unknown_category": (lambda r: {**r, "workclass": "Pirate"}, "workclass", "'Private'"),
    "unknown_field": (lambda r: {**r, "agee": 40}, "agee", "unknown field 'agee'"),
    "null_not_allowed": (lambda r: {**r, "education": None}, "education", "Input should be"),
    "number_for_category": (lambda r: {**r, "relationship": 3}, "relationship", "Input should be"),
    "sensitive_not_text": (lambda r: {**r, "sex": 1}, "sex", "valid string"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_predict_rejects_bad_rows_with_400(
    case: str, client: TestClient, row: dict[str, Any]
) -> None:
    mutate, field, message = BAD_ROWS[case]
    response = client.post("/predict", json=[row, mutate(row)])
    assert response.status_code == 400
    errors = _errors(response)
    assert len(errors) == 1, errors
    assert errors[0][:2] == (1, field)
    assert message in errors[0][2]


def test_predict_lists_every_error_with_row_and_field(
    client: TestClient, row: dict[str, Any]
) -> None:
    bad = [{**row, "age": "x", "workclass": "Nope"}, row, {**row, "hours_per_week": 500}]
    response = client.post("/predict", json=bad)
    assert response.status_code == 400
    assert response.json()["detail"] == "invalid request: 3 errors"
    assert [(r, f) for r, f, _ in _errors(response)] == [
        (0, "age"),
        (0, "workclass"),
        (2, "hours_per_week"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "empty list"),
        (b'{"age": 3}', "must be a JSON list"),
        (b"[1, 2]", "each row must be a JSON object"),
        (b'[{"age": 3', "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b'[{"age": NaN}]', "finite number"),
    ],
)
def test_predict_rejects_malformed_bodies_with_400(
    client: TestClient, body: bytes, message: str
) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    text = json.dumps(response.json())
    assert message in text


def test_predict_refuses_too_many_rows_with_413(client: TestClient, row: dict[str, Any]) -> None:
    response = client.post("/predict", json=[row] * 51)
    assert response.status_code == 413
    assert response.json()["detail"] == "51 rows exceed the limit of 50 per request"


def test_predict_refuses_a_large_body_before_parsing(client: TestClient) -> None:
    huge = b"[" + b" " * (64 * 1024) + b"]"
    response = client.post("/predict", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "exceeds the limit of 65536 bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b"["
        for _ in range(70):
            yield b" " * 1024
        yield b"]"

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_predict_wants_json(client: TestClient, row: dict[str, Any]) -> None:
    response = client.post(
        "/predict", content=json.dumps([row]), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_predict_accepts_gzip_and_bounds_its_inflated_size(
    client: TestClient, row: dict[str, Any]
) -> None:
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    ok = client.post("/predict", content=gzip.compress(json.dumps([row]).encode()), headers=headers)
    assert ok.status_code == 200
    bomb = gzip.compress(b"[" + b" " * (10 * 1024 * 1024) + b"]")
    assert len(bomb) < 64 * 1024
    assert client.post("/predict", content=bomb, headers=headers).status_code == 413
    broken = client.post("/predict", content=b"not gzip", headers=headers)
    assert broken.status_code == 400


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert (
        client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    hostile = client.get("/health", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert hostile != "x" * 500


def test_metrics_count_requests_rows_and_probabilities(
    client: TestClient, rows: list[dict[str, Any]]
) -> None:
    client.post("/predict", json=rows[:3])
    text = client.get("/metrics").text
    assert 'http_requests_total{endpoint="/predict",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text
    assert "predicted_rows_total" in text
    assert 'predicted_probability_bucket{le="+Inf"}' in text
    # Each HELP line says what the metric measures (it used to repeat the metric's name).
    helps = dict(line.split(" ", 3)[2:] for line in text.splitlines() if line.startswith("# HELP"))
    assert len(helps) >= 6
    for name, meaning in helps.items():
        assert meaning.strip() not in (name, name.removesuffix("_total")), name
    assert "seconds" in helps["http_request_duration_seconds"]


def test_openapi_documents_errors_and_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "503"} <= set(post["responses"])
    content = post["requestBody"]["content"]["application/json"]
    assert len(content["example"]) == 2
    row_schema = spec["components"]["schemas"]["Row"]
    assert "Private" in json.dumps(row_schema["properties"]["workclass"])
    assert set(row_schema["required"]) == set(MODEL_INPUTS)


def test_fastapi_422_becomes_400_elsewhere(client: TestClient) -> None:
    # /predict reads its own body; other validated input still never yields FastAPI's 422.
    assert client.get("/health", params={"x": "y"}).status_code == 200


# --- not ready: the process stays up, says why, and never serves an unverified model -----------


def _copy(artifacts_dir: Path, target: Path) -> Path:
    shutil.copytree(artifacts_dir, target)
    return target


def _assert_not_ready(folder: Path, reason: str, row: dict[str, Any]) -> None:
    with _client(folder) as c:
        assert c.get("/health").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert reason in ready.json()["detail"]
        predict = c.post("/predict", json=[row])
        assert predict.status_code == 503
        assert reason in predict.json()["detail"]
        assert c.get("/metadata").status_code == 503


def test_no_artifacts_means_not_ready(tmp_path: Path, row: dict[str, Any]) -> None:
    _assert_not_ready(tmp_path / "empty", "no manifest", row)


def test_hash_mismatch_means_not_ready(
    tmp_path: Path, artifacts_dir: Path, row: dict[str, Any]
) -> None:
    folder = _copy(artifacts_dir, tmp_path / "a")
    with (folder / MODEL_FILE).open("ab") as f:
        f.write(b"tampered")
    _assert_not_ready(folder, "sha256 does not match", row)


def test_an_unreadable_pickle_is_never_promoted_though_serving_never_reads_it(
    tmp_path: Path, artifacts_dir: Path, row: dict[str, Any]
) -> None:
    """Serving reads the trees' text and the encoding (hash-checked), never a pickle; the
    registry's verification unpickles the reference path too, so such a set is never moved to."""
    import hashlib

    from src.registry.actions import verify_set

    folder = _copy(artifacts_dir, tmp_path / "a")
    garbage = b"\x80\x05garbage"
    (folder / MODEL_FILE).write_bytes(garbage)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"][MODEL_FILE] = hashlib.sha256(garbage).hexdigest()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert "cannot unpickle" in (verify_set(folder) or "")
    with TestClient(create_app(Settings(ARTIFACTS_DIR=folder, LOG_PREDICTIONS=False))) as client:
        assert client.post("/predict", json=[row]).status_code == 200


def test_other_library_version_keeps_the_pickles_unread(
    tmp_path: Path, artifacts_dir: Path, row: dict[str, Any]
) -> None:
    from src.registry.actions import verify_set

    folder = _copy(artifacts_dir, tmp_path / "a")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["versions"]["scikit-learn"] = "0.24.2"
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert "trained with scikit-learn 0.24.2" in (verify_set(folder) or "")
    with pytest.raises(ArtifactError, match=r"trained with scikit-learn 0\.24\.2"):
        load_bundle(folder).pipeline  # noqa: B018 - reading it is the point


# --- POST /monitor ------------------------------------------------------------------------------


def test_monitor_with_an_empty_body_judges_the_default_files(client: TestClient) -> None:
    response = client.post("/monitor")
    assert response.status_code == 200
    plan = response.json()
    assert plan["status"] == "warn"
    assert plan["actions"] == ["trigger_retraining"]
    assert plan["page_oncall"] is False


def test_monitor_judges_the_observations_it_is_sent(client: TestClient) -> None:
    points = [
        {
            "ts": f"2026-01-0{d}T00:00:00Z",
            "roc_auc": 0.9,
            "pr_auc": 0.7,
            "acc": 0.85,
            "latency_p95_ms": 100,
            "error_rate": 0.01,
        }
        for d in range(1, 8)
    ]
    points[-1]["roc_auc"] = 0.8
    drift = {"threshold": 0.2, "overall_drift": False, "features": {"age": 0.01}}
    plan = client.post("/monitor", json={"metrics": points, "drift": drift}).json()
    assert plan["status"] == "critical"
    assert plan["page_oncall"] is True
    assert plan["findings"][0]["roc_auc_drop_pct"] == 11.1


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": []},
        {"metrics": [{"ts": "yesterday"}]},
        {"drift": {"overall_drift": "maybe", "threshold": 0.2, "features": {}}},
        {"unknown": 1},
        [1, 2],
    ],
)
def test_monitor_rejects_bad_observations_with_400(client: TestClient, body: Any) -> None:
    response = client.post("/monitor", json=body)
    assert response.status_code == 400
    assert response.json()["errors"]


def test_monitor_without_default_files_is_503(artifacts_dir: Path, tmp_path: Path) -> None:
    with _client(artifacts_dir, MONITOR_METRICS_PATH=tmp_path / "none.jsonl") as c:
        response = c.post("/monitor")
    assert response.status_code == 503
    assert "none.jsonl: no such file" in response.json()["detail"]
