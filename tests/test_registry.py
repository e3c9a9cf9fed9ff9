"""The model registry, the gate, hot swap and the agent that acts (issues 15 and 21)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from src.agent import executor as executor_module
from src.agent.executor import Executor, acting
from src.agent.plan import AgentPlan
from src.dataset.adult import read_uci
from src.loop.tables import make_engine
from src.model.artifacts import MANIFEST_FILE, MODEL_FILE, SAMPLE_FILE, load_bundle, model_version
from src.registry.__main__ import main as registry_cli
from src.registry.actions import build_trees, promote, register_trained, rollback
from src.registry.core import CHAMPION, MoveConflictError, Registry
from src.service.factory import create_app
from src.service.state import StoreBuilds, load_predictor
from src.settings import Settings
from src.training.data import split_dataset
from src.training.holdout import in_holdout
from src.training.train import carve_holdout, train
from tests.conftest import (
    ADULT,
    DATA,
    FEATURES,
    MODEL_INPUTS,
    ROOT,
    TARGET,
    _postgres_database,
    adult_tables,
)
from tests.conftest import census_predictions as predictions_table
from tests.conftest import read_adult as load_dataset
from tests.test_inference import Server, http


@pytest.fixture(scope="module")
def second_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another good model: the same data, another seed and no search."""
    folder = tmp_path_factory.mktemp("second")
    train(DATA / "adult_synth.csv", folder, seed=7, trials=0)
    return folder


def _trained_on(frame: pd.DataFrame, folder: Path) -> Path:
    data = folder / "data.csv"
    frame.to_csv(data, index=False)
    train(data, folder / "set", seed=42, trials=0)
    return folder / "set"


@pytest.fixture(scope="module")
def shuffled_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worse model: trained on shuffled labels."""
    frame = pd.read_csv(DATA / "adult_synth.csv")
    frame["income_gt_50k"] = np.random.default_rng(0).permutation(frame["income_gt_50k"])
    return _trained_on(frame, tmp_path_factory.mktemp("shuffled"))


@pytest.fixture(scope="module")
def unfair_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that learned to favour husbands (relationship gives sex away): wider sex gaps."""
    frame = pd.read_csv(DATA / "adult_synth.csv")
    rng = np.random.default_rng(1)
    husbands = (frame["relationship"] == "Husband") & (rng.random(len(frame)) < 0.5)
    frame.loc[husbands, "income_gt_50k"] = 1
    return _trained_on(frame, tmp_path_factory.mktemp("unfair"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The registry's database: SQLite beside the store, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
    else:
        for url in _postgres_database():
            yield {"DATABASE_URL": url}


def _registry(tmp_path: Path, **extra: Any) -> Registry:
    """Where a service with PREDICTION_LOG_DIR=tmp_path finds it (its defaults)."""
    settings = _settings(tmp_path, **extra)
    engine = make_engine(settings.registry_url)
    adult_tables(engine)  # the census's log: traffic is written into it directly
    return Registry(engine, settings.registry_store)


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(PREDICTION_LOG_DIR=tmp_path, LOG_REQUESTS=False, **extra)


def _with_champion(tmp_path: Path, artifacts_dir: Path, **extra: Any) -> Registry:
    registry = _registry(tmp_path, **extra)
    register_trained(registry, artifacts_dir, _settings(tmp_path, **extra), actor="test")
    return registry


def _force(registry: Registry, version: str, tmp_path: Path, **extra: Any) -> None:
    code, outcome = promote(
        registry, version, _settings(tmp_path, **extra), force=True, actor="test", reason="test"
    )
    assert code == 0, outcome


def _move(registry: Registry, version: str) -> None:
    """The champion alias moved as any mover moves it (compare-and-swap), without the gate."""
    registry.move(
        CHAMPION, version, expected=registry.alias(CHAMPION), kind="forced", actor="t", reason="t"
    )


# --- the registry -----------------------------------------------------------------------------


def test_registry_versions_are_content_hashes_and_registering_again_changes_nothing(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _registry(tmp_path)
    first, new = registry.register(artifacts_dir, actor="test")
    again, new_again = registry.register(artifacts_dir, actor="test")
    other, _ = registry.register(second_set, actor="test")
    assert new
    assert not new_again
    assert (
        first == again == model_version(json.loads((artifacts_dir / "manifest.json").read_text()))
    )
    assert other != first  # same data, another seed: another version
    assert (registry.folder(first) / MODEL_FILE).is_file()
    # The first set's holdout became the registry's, once.
    assert [e["kind"] for e in registry.history()] == ["registered", "holdout", "registered"]


def test_training_makes_the_first_set_champion_and_gates_the_next(
    tmp_path: Path, artifacts_dir: Path, shuffled_set: Path
) -> None:
    registry = _registry(tmp_path)
    settings = _settings(tmp_path)
    said = register_trained(registry, artifacts_dir, settings, actor="test")
    assert "registered as champion" in said
    champion = registry.alias(CHAMPION)
    said = register_trained(registry, shuffled_set, settings, actor="test")
    assert "registered as a candidate" in said
    assert registry.alias(CHAMPION) == champion  # a second training surprises no one


def test_gate_refuses_a_worse_challenger_and_says_why(
    tmp_path: Path, artifacts_dir: Path, shuffled_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    version, _ = registry.register(shuffled_set, actor="test")
    code, outcome = promote(registry, version, _settings(tmp_path), force=False, actor="test")
    assert code == 1
    assert any("ROC-AUC" in r for r in outcome["reasons"])
    assert outcome["numbers"]["roc_auc_difference"] < -0.1
    low, high = outcome["numbers"]["difference_ci95"]
    assert low <= outcome["numbers"]["roc_auc_difference"] <= high
    assert "holdout" in outcome["rows_from"]
    assert registry.history()[-1]["kind"] == "refused"


def test_gate_refuses_a_challenger_that_widens_a_fairness_gap(
    tmp_path: Path, artifacts_dir: Path, unfair_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    version, _ = registry.register(unfair_set, actor="test")
    code, outcome = promote(registry, version, _settings(tmp_path), force=False, actor="test")
    assert code == 1
    assert outcome["numbers"]["gap_widening"]["sex_dp"] > 0.02
    assert any("sex dp gap widens" in r for r in outcome["reasons"])


def test_force_overrides_the_gate_and_the_history_says_who_and_why(
    tmp_path: Path,
    artifacts_dir: Path,
    shuffled_set: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    version, _ = registry.register(shuffled_set, actor="test")
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as refused:  # --force without a reason: bad usage
        registry_cli(["promote", version, "--force"])
    assert refused.value.code == 2
    assert "--force needs --reason" in capsys.readouterr().err
    code = registry_cli(["promote", version, "--force", "--reason", "incident 42"])
    assert (code, registry.alias(CHAMPION)) == (0, version)
    forced = registry.history()[-1]
    assert forced["kind"] == "forced"
    assert "forced past the gate" in forced["reason"]
    assert forced["reason"].endswith(": incident 42")
    assert "@" in forced["actor"]  # user@host
    assert "src.registry promote" in forced["actor"]


def test_rollback_goes_back_down_the_stack_never_forth(
    tmp_path: Path,
    artifacts_dir: Path,
    second_set: Path,
    shuffled_set: Path,
    backend: dict[str, str],
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir, **backend)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    c, _ = registry.register(shuffled_set, actor="test")
    _force(registry, b, tmp_path, **backend)
    _force(registry, c, tmp_path, **backend)
    settings = _settings(tmp_path, **backend)
    code, outcome = rollback(registry, settings, actor="test")
    assert (code, outcome["champion"], outcome["was"]) == (0, b, c)
    code, outcome = rollback(registry, settings, actor="test")
    assert (code, outcome["champion"], outcome["was"]) == (0, a, b)  # further back, not to c
    code, outcome = rollback(registry, settings, actor="test")
    assert (code, registry.alias(CHAMPION)) == (1, a)  # the bottom: refused, nothing moves
    assert "nothing to roll back to" in outcome["reason"]
    # A promotion after rollbacks starts a new top; rolling back from it returns to a.
    _force(registry, b, tmp_path, **backend)
    assert rollback(registry, settings, actor="test")[1]["champion"] == a


def test_rollback_never_returns_to_the_version_it_left(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    _force(registry, b, tmp_path)
    assert rollback(registry, _settings(tmp_path), actor="test")[1]["champion"] == a
    code, _outcome = rollback(registry, _settings(tmp_path), actor="test")
    assert code == 1  # b was rolled back from: it is not a target
    assert registry.alias(CHAMPION) == a


def test_promoting_the_champion_is_a_no_op_that_records_no_move(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    _force(registry, b, tmp_path)
    events = len(registry.history())
    code, outcome = promote(registry, b, _settings(tmp_path), force=True, actor="t", reason="x")
    assert (code, outcome["outcome"]) == (0, "unchanged")
    assert len(registry.history()) == events  # nothing recorded, the stack is unchanged
    assert registry.champion_stack().versions == [a, b]
    assert rollback(registry, _settings(tmp_path), actor="test")[1]["champion"] == a


def test_rollback_verifies_its_target_and_refuses_a_broken_one(
    tmp_path: Path, artifacts_dir: Path, second_set: Path, backend: dict[str, str]
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir, **backend)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    _force(registry, b, tmp_path, **backend)
    (registry.folder(a) / MODEL_FILE).unlink()
    code, outcome = rollback(registry, _settings(tmp_path, **backend), actor="test")
    assert (code, registry.alias(CHAMPION)) == (1, b)  # the alias stays
    assert f"{a} does not verify" in outcome["reason"]
    assert "model.pkl" in outcome["reason"]
    assert registry.history()[-1]["kind"] == "refused"


def test_rollback_skips_a_broken_champion_and_says_so(
    tmp_path: Path, artifacts_dir: Path, second_set: Path, shuffled_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    c, _ = registry.register(shuffled_set, actor="test")
    _force(registry, b, tmp_path)
    _force(registry, c, tmp_path)
    (registry.folder(b) / MODEL_FILE).write_bytes(b"corrupt")
    code, outcome = rollback(registry, _settings(tmp_path), actor="test")
    assert (code, outcome["champion"]) == (0, a)
    assert outcome["skipped"][0]["version"] == b
    assert "sha256 does not match" in outcome["skipped"][0]["reason"]


def test_a_broken_set_is_never_promoted_even_by_force(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    (registry.folder(b) / MODEL_FILE).unlink()
    code, outcome = promote(registry, b, _settings(tmp_path), force=True, actor="t", reason="x")
    assert (code, registry.alias(CHAMPION)) == (1, a)
    assert "do not verify" in outcome["reasons"][0]


def test_a_move_is_a_compare_and_swap(
    tmp_path: Path, artifacts_dir: Path, second_set: Path, backend: dict[str, str]
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir, **backend)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    registry.move(CHAMPION, b, expected=a, kind="forced", actor="t", reason="first")
    with pytest.raises(MoveConflictError) as conflict:  # a stale expectation: refused
        registry.move(CHAMPION, a, expected=a, kind="forced", actor="t", reason="second")
    assert conflict.value.found == b
    assert registry.alias(CHAMPION) == b
    assert [e["reason"] for e in registry.history(kinds=("forced",))] == ["first"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "src.registry", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_promotions_started_at_once_are_judged_one_after_the_other(
    tmp_path: Path,
    artifacts_dir: Path,
    second_set: Path,
    shuffled_set: Path,
    backend: dict[str, str],
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir, **backend)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    c, _ = registry.register(shuffled_set, actor="test")
    env = {"PREDICTION_LOG_DIR": str(tmp_path), **backend}
    reason = ["--force", "--reason", "race"]
    runs = [_cli(["promote", b, *reason, "--json"], env), _cli(["promote", c, *reason], env)]
    codes = [run.wait(timeout=120) for run in runs]
    assert codes == [0, 0], [run.stderr.read() for run in runs]
    moves = registry.history(kinds=("promoted", "forced"))  # b may pass the gate on its own
    assert len(moves) == 2
    # The second move was judged against the first one's champion, never against a.
    first, second = moves
    assert first["previous"] == a
    assert second["previous"] == first["version"]
    assert second["details"]["champion"] == first["version"]
    assert registry.alias(CHAMPION) == second["version"]
    assert registry.champion_stack().versions == [a, first["version"], second["version"]]


def test_registry_cli_takes_json_after_the_command_and_prints_json_only_then(
    tmp_path: Path,
    artifacts_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _with_champion(tmp_path, artifacts_dir)
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(tmp_path))
    capsys.readouterr()
    assert registry_cli(["history", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert registry_cli(["--json", "history"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert registry_cli(["rollback"]) == 1
    text = capsys.readouterr()
    assert after == before
    assert after[0]["kind"] == "registered"
    assert text.out.startswith("refused: nothing to roll back to")
    assert not text.out.lstrip().startswith("{")


# --- the holdout ------------------------------------------------------------------------------


def _identity(frame: pd.DataFrame) -> set[bytes]:
    from src.training.holdout import row_hashes

    return set(row_hashes(ADULT, frame[list(FEATURES)], frame[TARGET]))


def test_no_training_path_sees_a_holdout_row(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    holdout = pd.read_csv(registry.holdout_path())
    recorded = registry.holdout()
    assert recorded["sha256"] == hashlib.sha256(registry.holdout_path().read_bytes()).hexdigest()
    assert recorded["rows"] == len(holdout) > 2000
    dataset = load_dataset(DATA / "adult_synth.csv")
    for folder in (artifacts_dir, second_set):  # seed 42 with a search, seed 7 without
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        assert manifest["holdout"]["rule"] == recorded["rule"]
        assert manifest["holdout"]["rows_excluded"] == len(holdout)
        # The training part the set recorded is the carved data's split, with no holdout row.
        x_train, _, y_train, _ = split_dataset(
            carve_holdout(ADULT, dataset).dataset, val_size=0.2, seed=manifest["seed"]
        )
        recorded_part = pd.read_csv(folder / "reference_rows.csv")
        assert _identity(recorded_part.assign(**{TARGET: 0})) == _identity(
            x_train.assign(**{TARGET: 0})
        )
        assert not _identity(x_train.assign(**{TARGET: y_train.to_numpy()})) & _identity(holdout)


def test_gate_reads_on_the_holdout_what_fresh_rows_say(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    """A challenger trained under another seed: its ROC-AUC on the registry's holdout is its
    ROC-AUC on UCI's test file, which no model ever saw (it was 0.969 against 0.915 when the
    holdout was the first champion's validation rows)."""
    registry = _with_champion(tmp_path, artifacts_dir)
    b, _ = registry.register(second_set, actor="test")
    _code, outcome = promote(registry, b, _settings(tmp_path), force=False, actor="t")
    assert "holdout" in outcome["rows_from"]
    fresh = read_uci(DATA / "raw" / "adult.test")
    bundle = load_bundle(second_set)
    matrix = bundle.pipeline.transform(fresh[list(MODEL_INPUTS)])
    fresh_auc = roc_auc_score(fresh[TARGET], bundle.model.predict_proba(matrix)[:, 1])
    assert abs(outcome["numbers"]["roc_auc_challenger"] - fresh_auc) < 0.01


def test_gate_refuses_to_judge_a_set_that_did_not_leave_the_holdout_out(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    folder = tmp_path / "old-style"
    shutil.copytree(second_set, folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["holdout"]  # as sets trained before the holdout existed
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    version, _ = registry.register(folder, actor="test")
    code, outcome = promote(registry, version, _settings(tmp_path), force=False, actor="t")
    assert code == 1
    assert outcome["rows_from"] == "not judged"
    assert "does not show the registry's holdout left out" in outcome["reasons"][0]


def test_the_holdout_rule_keeps_duplicates_together_and_ignores_number_spelling() -> None:
    frame = pd.read_csv(DATA / "adult_synth.csv").head(500)
    doubled = pd.concat([frame, frame], ignore_index=True)
    mask = in_holdout(ADULT, doubled[list(FEATURES)], doubled[TARGET])
    assert (mask[:500] == mask[500:]).all()
    as_floats = frame.astype({"age": float, "hours_per_week": float})
    assert (in_holdout(ADULT, as_floats[list(FEATURES)], as_floats[TARGET]) == mask[:500]).all()
    assert 0.1 < mask.mean() < 0.3


# --- retraining ------------------------------------------------------------------------------


def _labelled_traffic(engine: Any, rows: pd.DataFrame, start: datetime) -> None:
    """`rows` logged one a minute from `start`, each with its label."""
    from src.loop.tables import labels_table

    stamps = [start + timedelta(minutes=i) for i in range(len(rows))]
    records = [
        {
            "prediction_id": f"{i:012x}{'0' * 16}-00000",
            "request_id": f"r{i}",
            "row_index": 0,
            "ts": ts,
            "model_version": "v1",
            **{n: (None if pd.isna(row[n]) else row[n]) for n in FEATURES},
            "probability": 0.5,
            "predicted_class": 1,
        }
        for i, (ts, (_, row)) in enumerate(zip(stamps, rows.iterrows(), strict=True))
    ]
    labels = [
        {"prediction_id": r["prediction_id"], "label": int(y), "received_at": r["ts"]}
        for r, y in zip(records, rows[TARGET], strict=True)
    ]
    with engine.begin() as connection:
        connection.execute(predictions_table.insert(), records)
        connection.execute(labels_table.insert(), labels)


def test_retraining_trains_before_the_gate_rows_begin_and_leaves_no_file_behind(
    tmp_path: Path, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.registry.gate import GATE_ROWS
    from src.registry.retrain import retrain

    registry = _with_champion(tmp_path, artifacts_dir)
    fresh = read_uci(DATA / "raw" / "adult.test").head(GATE_ROWS + 2000)
    _labelled_traffic(registry.engine, fresh, datetime(2026, 3, 1, tzinfo=UTC))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    work = tmp_path / "work"
    folder = retrain(DATA / "adult_synth.csv", registry.engine, work, spec=ADULT, hours=24 * 30)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    traffic = manifest["training_traffic"]
    assert traffic["rows"] == 2000
    assert manifest["holdout"]["rule"] == registry.holdout()["rule"]
    assert [p.name for p in work.iterdir()] == ["set"]  # no CSV of the rows on disk
    assert list((tmp_path / "tmp").iterdir()) == []
    version, _ = registry.register(folder, actor="test")
    _code, outcome = promote(registry, version, _settings(tmp_path), force=False, actor="t")
    assert outcome["rows_from"].startswith("recent labelled traffic (5,000 rows")
    span = outcome["numbers"]["rows_span"]
    assert pd.Timestamp(span["from"]) > pd.Timestamp(traffic["to"])  # a time split


# --- serving the champion -------------------------------------------------------------------------


def test_a_corrupt_version_is_never_served(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    served = registry.alias(CHAMPION)
    bad, _ = registry.register(second_set, actor="test")
    (registry.folder(bad) / MODEL_FILE).write_bytes(b"not the model")  # corrupted in the store
    app = create_app(_settings(tmp_path, MODEL_POLL_SECONDS=0.2, PREDICT_ENGINE="booster"))
    with TestClient(app) as client:
        _move(registry, bad)
        deadline = time.monotonic() + 30
        while "not_served" not in (ready := client.get("/ready").json()):
            assert time.monotonic() < deadline, ready
            time.sleep(0.1)
        assert ready["model_version"] == served  # the old model stays
        refusal = ready["not_served"][bad]
        assert "sha256 does not match" in refusal["reason"]
        assert refusal["next_try_at"] >= refusal["refused_since"]
    assert registry.history()[-1]["kind"] == "refused_to_serve"


def test_a_refused_champion_is_served_once_it_verifies(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    """The file was missing for a moment, then came back: the worker tries again by itself
    (it used to keep the old model for the life of the process)."""
    registry = _with_champion(tmp_path, artifacts_dir)
    b, _ = registry.register(second_set, actor="test")
    model = registry.folder(b) / MODEL_FILE
    hidden = model.rename(model.with_suffix(".away"))
    app = create_app(_settings(tmp_path, MODEL_POLL_SECONDS=0.2, PREDICT_ENGINE="booster"))
    with TestClient(app) as client:
        _move(registry, b)
        deadline = time.monotonic() + 30
        while "not_served" not in (ready := client.get("/ready").json()):
            assert time.monotonic() < deadline, ready
            time.sleep(0.05)
        assert ready["not_served"][b]["attempts"] >= 1
        hidden.rename(model)
        while client.get("/ready").json()["model_version"] != b:
            assert time.monotonic() < deadline, "the refused champion was never retried"
            time.sleep(0.05)
        assert "not_served" not in client.get("/ready").json()


def test_a_rollback_swaps_back_to_the_model_still_loaded(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    app = create_app(_settings(tmp_path, MODEL_POLL_SECONDS=0.1, PREDICT_ENGINE="booster"))
    with TestClient(app) as client:
        first = app.state.model.predictor
        _move(registry, b)
        deadline = time.monotonic() + 60
        while client.get("/ready").json()["model_version"] != b:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert app.state.model.previous is first  # kept loaded
        assert rollback(registry, _settings(tmp_path), actor="test")[0] == 0
        while client.get("/ready").json()["model_version"] != a:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert app.state.model.predictor is first  # the same object: nothing was loaded


def test_registration_keeps_compiled_trees_checked_by_hash(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    registry = _registry(tmp_path)
    settings = _settings(tmp_path, REGISTRY_COMPILE=True)
    register_trained(registry, artifacts_dir, settings, actor="test")
    version = registry.alias(CHAMPION)
    builds = StoreBuilds(registry, version)
    kept = builds.read()
    assert kept
    assert build_trees(registry, version) == "compiled trees already kept"
    state = load_predictor(settings, registry)  # from the kept object: serves, self-checked
    assert state.predictor is not None
    assert state.predictor.version == version
    path = registry.folder(version) / ".builds" / f"{StoreBuilds.key()}.o"
    path.write_bytes(kept[:-1] + bytes([kept[-1] ^ 1]))  # tampered: never loaded
    assert builds.read() is None


def test_any_load_error_keeps_the_process_up_and_says_why(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    # A sample whose hash matches its manifest but whose row lacks fields.
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(artifacts_dir, folder)
    sample = json.loads((folder / SAMPLE_FILE).read_text())
    sample["rows"] = [{"age": 40}]
    (folder / SAMPLE_FILE).write_text(json.dumps(sample))
    manifest = json.loads((folder / "manifest.json").read_text())
    import hashlib

    manifest["files"][SAMPLE_FILE] = hashlib.sha256((folder / SAMPLE_FILE).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    state = load_predictor(_settings(tmp_path, ARTIFACTS_DIR=folder))
    assert state.predictor is None
    assert "ValidationError" in state.reason


def _post(url: str, rows: list[dict[str, Any]]) -> tuple[int, str | None]:
    status, body = http("POST", f"{url}/predict", rows)
    return status, body.get("model_version") if status == 200 else None


def test_a_swap_under_load_fails_no_request_and_changes_version(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    first = registry.alias(CHAMPION)
    second, _ = registry.register(second_set, actor="test")
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:3]
    server = Server(
        None,
        PREDICTION_LOG_DIR=str(tmp_path),
        MODEL_POLL_SECONDS="0.2",
        LOG_REQUESTS="false",
        PREDICT_ENGINE="booster",  # the swap is checked, not the compiler (a test of its own)
    )
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            answers.append(_post(server.url, rows))

    try:
        server.wait_ready()
        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1)
        _move(registry, second)
        deadline = time.monotonic() + 60
        while not answers or answers[-1][1] != second:
            assert time.monotonic() < deadline, "the service never swapped"
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        server.kill()
    statuses = {status for status, _ in answers}
    versions = [v for _, v in answers]
    assert statuses == {200}  # not one failed request
    assert versions[0] == first
    assert versions[-1] == second
    assert versions.index(second) > 0


def test_two_workers_converge_on_a_champion_they_first_refused(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    second, _ = registry.register(second_set, actor="test")
    model = registry.folder(second) / MODEL_FILE
    hidden = model.rename(model.with_suffix(".away"))  # missing for a moment
    rows = json.loads((artifacts_dir / "sample_rows.json").read_text())["rows"][:1]
    server = Server(
        None,
        uvicorn_args=("--workers", "2", "--no-access-log"),
        PREDICTION_LOG_DIR=str(tmp_path),
        MODEL_POLL_SECONDS="0.2",
        LOG_REQUESTS="false",
        PREDICT_ENGINE="booster",  # the swap is checked, not the compiler (a test of its own)
    )
    try:
        server.wait_ready()
        time.sleep(3)  # the second worker too
        _move(registry, second)
        deadline = time.monotonic() + 60
        while len(registry.history(kinds=("refused_to_serve",))) < 2:  # both workers refused
            assert time.monotonic() < deadline
            time.sleep(0.2)
        hidden.rename(model)  # back: nobody reloads, nobody restarts
        while True:  # fresh connections each: the kernel spreads them over both workers
            versions = {_post(server.url, rows)[1] for _ in range(40)}
            if versions == {second}:
                break
            assert time.monotonic() < deadline, versions
            time.sleep(0.5)
    finally:
        server.kill()


# --- the agent acts ---------------------------------------------------------------------------


def _plan(status: str = "critical", actions: list[str] | None = None, **extra: Any) -> AgentPlan:
    extra.setdefault("findings", [{"roc_auc_drop_pct": 14.3}])
    return AgentPlan(
        status=status,
        actions=actions or ["roll_back_model", "open_incident", "trigger_retraining"],
        page_oncall=status == "critical",
        rationale="ROC-AUC fell 14.3% vs its 7-day median.",
        rules_fired=["roc_auc_drop_critical"],
        generated_at=datetime.now(UTC).isoformat(),
        **extra,
    )


def test_executor_retrains_gates_promotes_and_acts_once(
    tmp_path: Path, artifacts_dir: Path, second_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    first = registry.alias(CHAMPION)
    executor = Executor(registry, _settings(tmp_path), retrain=lambda: second_set, actor="test")
    results = executor.execute(_plan())
    by_action = {r["action"]: r for r in results}
    # Alerts first (a failing retraining can never cost the page), then the moves.
    assert [r["action"] for r in results] == [
        "open_incident",
        "page_oncall",
        "roll_back_model",
        "trigger_retraining",
    ]
    assert by_action["roll_back_model"]["result"] == "skipped: no previous champion"
    assert "stderr" in by_action["open_incident"]["result"]
    assert "open_incident: critical" in capsys.readouterr().err
    assert by_action["trigger_retraining"]["result"] in ("promoted", "refused")
    assert by_action["page_oncall"]["action"] == "page_oncall"
    moved = registry.alias(CHAMPION) != first
    assert moved == (by_action["trigger_retraining"]["result"] == "promoted")
    again = executor.execute(_plan())  # the same plan: acts once
    assert "executed already" in again[0]["result"]


def test_executor_respects_the_cooldown(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    second, _ = registry.register(second_set, actor="test")
    promote(registry, second, _settings(tmp_path), force=True, actor="test")  # just moved
    executor = Executor(registry, _settings(tmp_path), retrain=lambda: second_set, actor="test")
    results = {
        r["action"]: r
        for r in executor.execute(_plan(actions=["roll_back_model", "trigger_retraining"]))
    }
    assert results["roll_back_model"]["result"] == "refused"
    assert "cooldown" in results["trigger_retraining"]["result"]
    assert registry.alias(CHAMPION) == second


def test_the_agent_rolls_back_once_and_never_forth(
    tmp_path: Path, artifacts_dir: Path, second_set: Path
) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    a = registry.alias(CHAMPION)
    b, _ = registry.register(second_set, actor="test")
    _force(registry, b, tmp_path)
    settings = _settings(tmp_path, AGENT_COOLDOWN_HOURS=0)
    executor = Executor(registry, settings, actor="agent")
    first = {r["action"]: r for r in executor.execute(_plan(actions=["roll_back_model"]))}
    assert (first["roll_back_model"]["result"], first["roll_back_model"]["champion"]) == (
        "rolled_back",
        a,
    )
    later = _plan(actions=["roll_back_model"], findings=[{"roc_auc_drop_pct": 20.1}])
    second = {r["action"]: r for r in executor.execute(later)}  # a new plan, after the cooldown
    assert second["roll_back_model"]["result"] == "skipped: no previous champion"
    assert registry.alias(CHAMPION) == a


def test_executor_takes_a_lock(tmp_path: Path, artifacts_dir: Path) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    with acting(registry) as held:
        assert held
        results = Executor(registry, _settings(tmp_path), actor="t").execute(
            _plan(actions=["raise_thresholds"])
        )
    assert "another executor is acting" in results[0]["result"]


def test_raise_thresholds_is_a_recommendation_only(tmp_path: Path, artifacts_dir: Path) -> None:
    registry = _with_champion(tmp_path, artifacts_dir)
    results = Executor(registry, _settings(tmp_path), actor="t").execute(
        _plan(status="warn", actions=["raise_thresholds"])
    )
    assert results[0]["result"].startswith("recommended, not done")
    journal = [(e["kind"], e["details"]["action"]) for e in registry.history()[-3:]]
    assert journal == [
        ("act_intent", "raise_thresholds"),
        ("act_done", "raise_thresholds"),
        ("executed", "*"),
    ]


class _Stub(BaseHTTPRequestHandler):
    mode: ClassVar[str] = "ok"
    bodies: ClassVar[list[dict[str, Any]]] = []
    keys: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.bodies.append(body)
        _Stub.keys.append(self.headers["Idempotency-Key"])
        if _Stub.mode == "slow":
            time.sleep(1.0)
        self.send_response(500 if _Stub.mode == "error" else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(executor_module, "WEBHOOK_TIMEOUT", 0.3)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stub.bodies.clear()
    _Stub.keys.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("mode", "result", "calls"),
    [("ok", "sent", 1), ("slow", "failed", 1), ("error", "failed", executor_module.WEBHOOK_TRIES)],
)
def test_incidents_go_to_the_webhook_once_with_an_idempotency_key(
    tmp_path: Path, artifacts_dir: Path, webhook: str, mode: str, result: str, calls: int
) -> None:
    """A receiver slower than the timeout may have the alert: it is not sent again (it got
    each alert 3 times). A 5xx surely did not take it: tried again, with the same key."""
    _Stub.mode = mode
    registry = _with_champion(tmp_path, artifacts_dir)
    settings = _settings(tmp_path, ALERT_WEBHOOK_URL=webhook)
    plan = _plan(status="warn", actions=["open_incident"])
    outcome = Executor(registry, settings, actor="t").execute(plan)[0]
    time.sleep(1.2 if mode == "slow" else 0)  # the slow receiver finishes its one call
    assert outcome["result"] == result
    assert len(_Stub.bodies) == outcome["attempts"] == calls
    assert len(set(_Stub.keys)) == 1
    assert _Stub.keys[0] == f"{executor_module.fingerprint(plan)}:open_incident"
    alert = _Stub.bodies[0]
    assert alert["version"] == "4"
    assert alert["alerts"][0]["labels"]["action"] == "open_incident"
    if mode == "error":
        assert outcome["error"] == "HTTP 500"
