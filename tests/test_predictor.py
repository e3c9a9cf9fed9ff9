"""The serving fast path: same probabilities as the pickles, never looser than the contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from src.dataset.table import request_rows
from src.model.artifacts import load_bundle
from src.model.compiled import FolderBuilds
from src.model.encoder import ROW_WISE_BELOW
from src.model.predictor import MAX_ENGINE_DIFFERENCE, Predictor
from src.service.state import load_predictor
from src.settings import Settings
from src.training.data import carve_holdout, split_dataset
from tests.conftest import ADULT, DATA, FEATURES, ROOT
from tests.conftest import read_adult as load_dataset


@pytest.fixture(scope="module")
def predictors(artifacts_dir: Path) -> dict[str, Predictor]:
    bundle = load_bundle(artifacts_dir)
    # The trees kept in the folder, as the service keeps them: the session's servers and this
    # module compile them once between them (about 25 s each time on 2 cores).
    builds = FolderBuilds(artifacts_dir, bundle.version)
    return {
        engine: Predictor(bundle, engine=engine, builds=builds) for engine in ("lleaves", "booster")
    }


@pytest.fixture(scope="module")
def validation_rows() -> list[dict[str, Any]]:
    """Every validation row, as a client sends it: the spec's domain holds every category (one
    the training part never saw, like one 'Never-worked' row, is served as unknown)."""
    dataset = carve_holdout(ADULT, load_dataset(DATA / "adult_synth.csv")).dataset
    _, x_val, _, _ = split_dataset(dataset, val_size=0.2, seed=42)
    return request_rows(ADULT, x_val[list(FEATURES)])


@pytest.mark.parametrize("engine", ["lleaves", "booster"])
def test_engines_match_the_pickled_pipeline_on_every_validation_row(
    engine: str, predictors: dict[str, Predictor], validation_rows: list[dict[str, Any]]
) -> None:
    predictor = predictors[engine]
    matrix = predictor.encoder.encode(validation_rows)
    assert matrix is not None
    fast = predictor.probabilities(matrix)
    reference = predictor.pipeline_probabilities(validation_rows)
    assert len(fast) == len(validation_rows) > 1800
    assert np.abs(fast - reference).max() <= MAX_ENGINE_DIFFERENCE


def test_row_wise_and_column_wise_encoding_agree(
    predictors: dict[str, Predictor], validation_rows: list[dict[str, Any]]
) -> None:
    encoder = predictors["lleaves"].encoder
    batch = encoder.encode(validation_rows[:200])
    one_by_one = np.vstack([encoder.encode([r]) for r in validation_rows[:200]])
    np.testing.assert_array_equal(batch, one_by_one)


MUTATIONS = {
    "bool": lambda r: {**r, "age": True},
    "string_number": lambda r: {**r, "age": "39"},
    "nan": lambda r: {**r, "age": float("nan")},
    "inf": lambda r: {**r, "capital_gain": float("inf")},
    "out_of_range": lambda r: {**r, "hours_per_week": 169},
    "huge_int": lambda r: {**r, "capital_loss": 10**30},
    "unknown_category": lambda r: {**r, "education": "PhD"},
    "missing_marker": lambda r: {**r, "education": "missing"},
    "unhashable": lambda r: {**r, "occupation": ["Sales"]},
    "null_required": lambda r: {**r, "relationship": None},
    "null_numeric": lambda r: {**r, "age": None},
    "extra_field": lambda r: {**r, "zip": "12345"},
    "missing_field": lambda r: {k: v for k, v in r.items() if k != "education_num"},
    "sensitive_number": lambda r: {**r, "race": 5},
    "sensitive_long": lambda r: {**r, "native_country": "x" * 201},
    "sensitive_nul": lambda r: {**r, "sex": "Ma\x00le"},
    "sensitive_absent": lambda r: {k: v for k, v in r.items() if k != "sex"},
    "sensitive_null": lambda r: {**r, "marital_status": None},
    "float_age": lambda r: {**r, "age": 39.5},
    "null_nullable": lambda r: {**r, "workclass": None},
}


@pytest.mark.parametrize("size", [1, ROW_WISE_BELOW + 4])
@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_fast_path_never_accepts_what_the_contract_rejects(
    case: str, size: int, predictors: dict[str, Predictor], validation_rows: list[dict[str, Any]]
) -> None:
    predictor = predictors["lleaves"]
    base = next(r for r in validation_rows if r["workclass"] is not None)
    rows = [dict(base) for _ in range(size)]
    rows[-1] = MUTATIONS[case](base)
    # As serving sees it: the raw body, parsed by orjson for the fast path and validated as JSON.
    body = json.dumps(rows).encode()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:  # NaN, Infinity: not JSON, so never on the fast path
        parsed = None
    encoded = predictor.encoder.encode(parsed) if parsed is not None else None
    try:
        validated = predictor.adapter.validate_json(body)
    except ValidationError:
        assert encoded is None, "the fast path accepted rows the contract rejects"
        return
    # Accepted by the contract: encoding the validated rows must work and agree with the fast path.
    again = predictor.encoder.encode(validated)
    assert again is not None
    if encoded is not None:
        np.testing.assert_array_equal(encoded, again)


def test_self_check_passes_and_reports_the_difference(predictors: dict[str, Predictor]) -> None:
    for predictor in predictors.values():
        assert predictor.self_check() <= MAX_ENGINE_DIFFERENCE


def test_a_served_folder_keeps_its_compiled_trees_and_ignores_a_torn_copy(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    state = load_predictor(Settings(ARTIFACTS_DIR=artifacts_dir, LOG_PREDICTIONS=False))
    assert state.predictor is not None
    kept = FolderBuilds(artifacts_dir, state.predictor.version)
    code = kept.read()
    assert code  # compiled once, kept beside the set for the next process
    builds = FolderBuilds(tmp_path, "v1")
    assert builds.read() is None
    builds.keep(code)
    assert builds.read() == code
    builds.path.write_bytes(code[: len(code) // 2])  # torn: never loaded
    assert builds.read() is None


SERVING_IMPORTS = """
import json, sys
from fastapi.testclient import TestClient
from src.service.factory import create_app
from src.settings import Settings
folder = sys.argv[1]
rows = json.load(open(folder + "/sample_rows.json"))["rows"]
with TestClient(create_app(Settings(ARTIFACTS_DIR=folder, LOG_PREDICTIONS=False))) as client:
    assert client.get("/ready").status_code == 200
    assert client.post("/predict", json=rows).status_code == 200
    assert client.post("/predict", json=rows[:1]).status_code == 200
    print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_a_serving_worker_imports_no_training_stack(artifacts_dir: Path) -> None:
    """A worker loads, checks itself against the probe rows and answers with the compiled trees
    and the spec's encoder: scikit-learn, SciPy, LightGBM, pandas and pyarrow stay unloaded
    (together ~1.4 s of a cold start and their memory). Reasons load LightGBM on first use."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SERVING_IMPORTS, str(artifacts_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(done.stdout.split())
    heavy = {"sklearn", "scipy", "lightgbm", "pandas", "pyarrow", "matplotlib", "fairlearn"}
    assert not loaded & heavy
