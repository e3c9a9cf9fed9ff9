"""API fuzzing: cases generated from the service's own OpenAPI schema, plus what generators miss.

Every response must be a documented status with a body that conforms to the schema; no 5xx; every
4xx says what is wrong. The counts are checked at the end of the module (most of FUZZ_CASES per
operation).
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from src.service.factory import create_app
from src.settings import Settings

# `make test` fuzzes shallow, in-process; CI fuzzes deep against the real server with two
# workers (scripts/fuzz_live.sh, 500 cases per operation). FUZZ_CASES sets this one's depth:
# 150 took 37 s of the suite, 60 takes 14 s; the deep run is where a rare case is found.
CASES_PER_OPERATION = int(os.environ.get("FUZZ_CASES", "60"))
SEEN: Counter[str] = Counter()
TOKEN = "fuzzing-token"  # noqa: S105 - not a secret: the in-process app's own
AUTHORITY = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def app(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = tmp_path_factory.mktemp("fuzz-log")
    settings = Settings(
        ARTIFACTS_DIR=artifacts_dir, LOG_REQUESTS=False, PREDICTION_LOG_DIR=log, SERVICE_TOKEN=TOKEN
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    # The lifespan runs for the whole module: the model is loaded, the prediction log is on and
    # every generated case goes through it.
    with TestClient(app) as c:
        yield c


def _lifespan_already_running(app: Any) -> Any:
    """The app for the fuzzer's own client: lifespan events are acknowledged, not run again, so
    every case meets the model and the log that the module's client started."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # startup / shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    return wrapped


@pytest.fixture(scope="module")
def api_schema(app: Any, client: TestClient) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", _lifespan_already_running(app))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.include(path_regex="^/(predict|monitor|feedback)$").parametrize()
@settings(
    max_examples=CASES_PER_OPERATION,
    derandomize=True,  # a fixed seed: the same cases on every run
    database=None,  # and no example database written into the checkout
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_cases_get_documented_answers(case: Any) -> None:
    response = case.call_and_validate(headers=AUTHORITY)
    SEEN[case.path] += 1
    assert response.status_code < 500
    if 400 <= response.status_code < 500:
        detail = response.json()["detail"]
        assert isinstance(detail, str)
        assert len(detail) > 10


@schema.include(method="GET").parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_read_endpoints_conform(case: Any) -> None:
    case.call_and_validate()


def test_most_asked_cases_were_generated(app: Any) -> None:
    # Runs after the generated tests above (pytest keeps file order within a module).
    print(f"generated cases: {dict(SEEN)}")
    # Generation stops early where a schema's space is small: most, not all, of the cases asked.
    assert SEEN["/predict"] + SEEN["/monitor"] + SEEN["/feedback"] >= 2.5 * CASES_PER_OPERATION
    assert SEEN["/feedback"] >= CASES_PER_OPERATION // 2, SEEN
    log = app.state.prediction_log
    assert log.flush()
    assert log.state == "up"  # the log was on, and still is, after every case
    assert log.dropped_rows == 0


# --- what generators miss -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def row(artifacts_dir: Path) -> dict[str, Any]:
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"]
    return next(r for r in rows if r["workclass"] is not None)


def _post(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post(
        "/predict", content=body, headers={"content-type": "application/json", **headers}
    )


@pytest.mark.parametrize(
    "literal",
    [b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b"9" * 400, b"1e-400", b"-0.0"],
)
def test_extreme_numbers_are_400_or_handled(
    client: TestClient, row: dict[str, Any], literal: bytes
) -> None:
    body = json.dumps([row]).encode().replace(b'"capital_gain": 0', b'"capital_gain": ' + literal)
    response = _post(client, body)
    if literal in (b"1e-400", b"-0.0"):  # both parse to zero, a valid amount
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "capital_gain"


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    response = _post(client, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400


def test_a_50_mb_body_is_refused_unread(client: TestClient) -> None:
    response = _post(client, b"[" + b" " * (50 * 1024 * 1024) + b"]")
    assert response.status_code == 413


def test_a_row_with_10000_fields_is_400(client: TestClient, row: dict[str, Any]) -> None:
    wide = {**row, **{f"f{i}": i for i in range(10_000)}}
    response = client.post("/predict", json=[wide])
    assert response.status_code == 400
    assert len(response.json()["errors"]) == 10_000
    assert response.json()["errors"][0]["message"].startswith("unknown field 'f0'")


@pytest.mark.parametrize("value", ["Prívate", "私営", "Private\u0000", "😀", "Private ", "PRIVATE"])
def test_unicode_categories_are_400_with_the_allowed_values(
    client: TestClient, row: dict[str, Any], value: str
) -> None:
    body = json.dumps([{**row, "workclass": value}], ensure_ascii=False).encode()
    response = _post(client, body)
    assert response.status_code == 400
    assert "Private" in response.json()["errors"][0]["message"]


def test_invalid_utf8_and_lone_surrogates_are_400(client: TestClient, row: dict[str, Any]) -> None:
    body = json.dumps([row]).encode()
    assert _post(client, body.replace(b"Private", b"Priv\xffate")).status_code == 400
    assert _post(client, body.replace(b"Private", b"\\ud800")).status_code == 400


def test_duplicate_keys_take_the_last_value(client: TestClient, row: dict[str, Any]) -> None:
    text = json.dumps([row])
    duplicated = text.replace('"age": ', '"age": 500, "age": ', 1)
    assert _post(client, duplicated.encode()).status_code == 200
    reversed_order = text.replace('"age": ', '"age": 40, "age": 500, "ignored": ', 1)
    assert _post(client, reversed_order.encode()).status_code == 400


def test_gzip_bodies(client: TestClient, row: dict[str, Any]) -> None:
    body = gzip.compress(json.dumps([row]).encode())
    assert _post(client, body, **{"content-encoding": "gzip"}).status_code == 200
    assert _post(client, body).status_code == 400  # gzip bytes without the header: not JSON
    assert _post(client, b"x", **{"content-encoding": "br"}).status_code == 415


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ],
)
def test_wrong_content_types_are_415(
    client: TestClient, row: dict[str, Any], content_type: str
) -> None:
    response = client.post(
        "/predict", content=json.dumps([row]), headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_json_with_charset_is_fine(client: TestClient, row: dict[str, Any]) -> None:
    response = client.post(
        "/predict",
        content=json.dumps([row]),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("body", [b"null", b"true", b'"rows"', b"42", b"{}", b"[[]]", b"[null]"])
def test_json_that_is_not_a_list_of_rows_is_400(client: TestClient, body: bytes) -> None:
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json()["errors"]


def test_monitor_rejects_hostile_bodies(client: TestClient) -> None:
    deep = b'{"metrics": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert (
        client.post(
            "/monitor", content=deep, headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    huge = b'{"metrics": [' + b" " * (17 * 1024 * 1024) + b"]}"
    assert (
        client.post(
            "/monitor", content=huge, headers={"content-type": "application/json"}
        ).status_code
        == 413
    )


def test_monitor_refuses_a_timestamp_that_overflows_in_utc(client: TestClient) -> None:
    # Found by the fuzzer once it ran with the lifespan on: year 1 at +00:01 is before year 1 UTC.
    point = {"ts": "0001-01-01T00:00:00+00:01", "roc_auc": 0.9, "pr_auc": 0.7, "acc": 0.8}
    point.update(latency_p95_ms=1.0, error_rate=0.0)
    response = client.post("/monitor", json={"metrics": [point]})
    assert response.status_code == 400
    assert "out of range" in response.json()["errors"][0]["message"]
