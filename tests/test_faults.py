"""Faults: broken artifacts, interrupted training, a corpus of bad files for every CLI."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from src import agent_monitor, drift
from src import train as train_module
from src.errors import ArtifactError
from src.model.artifacts import MANIFEST_FILE, MODEL_FILE, PIPELINE_FILE, load_bundle
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import CSV_COLUMNS, DATA, ROOT

# Binary junk, the same on every run (and in every pytest-xdist worker).
BINARY = np.random.default_rng(0).bytes(4096)

# --- artifacts ----------------------------------------------------------------------------------


def _copy(artifacts_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifacts_dir, tmp_path / "artifacts"))


def _ready(folder: Path) -> tuple[int, str, int]:
    with TestClient(create_app(Settings(ARTIFACTS_DIR=folder, LOG_REQUESTS=False))) as client:
        ready = client.get("/ready")
        predict = client.post("/predict", json=[{"age": 40}])
        return (
            ready.status_code,
            ready.json()["detail"] if ready.status_code != 200 else "",
            predict.status_code,
        )


def test_a_missing_pickle_means_503(artifacts_dir: Path, tmp_path: Path) -> None:
    folder = _copy(artifacts_dir, tmp_path)
    (folder / PIPELINE_FILE).unlink()
    status, reason, predict = _ready(folder)
    assert (status, predict) == (503, 503)
    assert "feature_pipeline.pkl: cannot read" in reason


def test_a_truncated_pickle_means_503(artifacts_dir: Path, tmp_path: Path) -> None:
    folder = _copy(artifacts_dir, tmp_path)
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: len(data) // 2])
    status, reason, predict = _ready(folder)
    assert (status, predict) == (503, 503)
    assert "sha256 does not match" in reason


def test_a_corrupt_manifest_means_503(artifacts_dir: Path, tmp_path: Path) -> None:
    folder = _copy(artifacts_dir, tmp_path)
    (folder / MANIFEST_FILE).write_text("{not json")
    status, reason, _ = _ready(folder)
    assert status == 503
    assert "unreadable manifest" in reason


class _Boom:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_nothing_is_unpickled_before_its_hash_is_checked(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(artifacts_dir, tmp_path)
    marker = tmp_path / "executed"
    (folder / MODEL_FILE).write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        load_bundle(folder)
    assert not marker.exists()


# --- interrupted training -----------------------------------------------------------------------


def test_training_interrupted_by_a_signal_leaves_no_set_that_looks_complete(tmp_path: Path) -> None:
    outdir = tmp_path / "artifacts"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "src.train",
            "--data",
            str(DATA / "adult_synth.csv"),
            "--outdir",
            str(outdir),
            "--trials",
            "20",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until it is halfway through the search
        if "trial  3/20" in line:
            break
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    assert code == 130
    assert not (outdir / MANIFEST_FILE).exists()
    assert not list(outdir.glob(".staging-*")) if outdir.exists() else True
    # Re-running succeeds and yields a verifiable set.
    assert (
        train_module.main(
            ["--data", str(DATA / "adult_synth.csv"), "--outdir", str(outdir), "--trials", "0"]
        )
        == 0
    )
    load_bundle(outdir)


def test_a_killed_run_staging_folder_is_cleaned_by_the_next_run(tmp_path: Path) -> None:
    outdir = tmp_path / "artifacts"
    stale = outdir / ".staging-999999-abc"  # a pid that is not running
    stale.mkdir(parents=True)
    (stale / MODEL_FILE).write_bytes(b"half")
    assert (
        train_module.main(
            ["--data", str(DATA / "adult_synth.csv"), "--outdir", str(outdir), "--trials", "0"]
        )
        == 0
    )
    assert not stale.exists()


# --- a corpus of bad files for every CLI ----------------------------------------------------------

HEADER = ",".join(CSV_COLUMNS)
ROW = "39,Private,Bachelors,13,Never-married,Sales,Not-in-family,White,Male,0,0,40,United-States,0"

CSV_CORPUS: dict[str, tuple[bytes, str | None]] = {
    # name: (content, the one-line error; None = accepted, with a documented result)
    "semicolons": ((HEADER + "\n" + ROW + "\n").replace(",", ";").encode(), "comma-separated"),
    "tabs": ((HEADER + "\n" + ROW + "\n").replace(",", "\t").encode(), "comma-separated"),
    "bom": (("\ufeff" + HEADER + "\n" + ROW + "\n").encode(), None),
    "crlf": ((HEADER + "\r\n" + ROW + "\r\n").encode(), None),
    "binary": (BINARY[:4096].replace(b"\n", b"") + b"\x00", "not"),
    "gzip_by_mistake": (b"\x1f\x8b\x08\x00" + b"\x00" * 64, "not"),
    "header_only": ((HEADER + "\n").encode(), "no data rows"),
    "zero_bytes": (b"", "the file is empty"),
    "blank_first_line": (("\n" + HEADER + "\n" + ROW + "\n").encode(), "first line is empty"),
    "duplicated_column": ((HEADER + ",age\n" + ROW + ",3\n").encode(), "appears more than once"),
    "text_in_numeric": (
        (HEADER + "\n" + ROW.replace("39,", "thirty-nine,", 1) + "\n").encode(),
        "column 'age': 'thirty-nine' is not a number",
    ),
    "ragged_row": ((HEADER + "\n" + ROW + ",extra,fields\n").encode(), "cannot parse"),
    "latin1": ((HEADER + "\n" + ROW.replace("Sales", "Salés") + "\n").encode("latin-1"), "not"),
}


def _write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    return path


def _check(code: int, err: str, path: Path, expected: str | None) -> None:
    if expected is None:
        assert code in (0, 1), err  # accepted (train may fail acceptance on one row: not here)
        return
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path}"), err
    assert expected in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", sorted(CSV_CORPUS))
def test_train_cli_on_the_corpus(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, expected = CSV_CORPUS[case]
    path = _write(tmp_path, content)
    if expected is None:  # one row cannot be split: accepted formats are checked by drift below
        return
    code = train_module.main(
        ["--data", str(path), "--outdir", str(tmp_path / "out"), "--trials", "0"]
    )
    _check(code, capsys.readouterr().err, path, expected)


@pytest.mark.parametrize("case", sorted(CSV_CORPUS))
def test_drift_cli_on_the_corpus(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, expected = CSV_CORPUS[case]
    path = _write(tmp_path, content)
    out = tmp_path / "report.json"
    code = drift.main(
        ["--ref", str(DATA / "adult_ref_sample.csv"), "--new", str(path), "--out", str(out)]
    )
    _check(code, capsys.readouterr().err, path, expected)
    assert out.exists() == (expected is None)
    if expected is None:
        assert json.loads(out.read_text())["details"]["age"]["n_new"] == 1


METRICS_LINE = json.dumps(
    {
        "ts": "2026-01-01T00:00:00Z",
        "roc_auc": 0.9,
        "pr_auc": 0.7,
        "acc": 0.8,
        "latency_p95_ms": 100,
        "error_rate": 0.01,
    }
)
JSONL_CORPUS: dict[str, tuple[bytes, str | None]] = {
    "bom": (("\ufeff" + METRICS_LINE + "\n").encode(), None),
    "crlf": ((METRICS_LINE + "\r\n" + METRICS_LINE + "\r\n").encode(), None),
    "blank_lines": (("\n\n" + METRICS_LINE + "\n\n").encode(), None),
    "binary": (BINARY[:2048] + b"\xff", "not a UTF-8 text file"),
    "zero_bytes": (b"", "no metrics points"),
    "csv_instead": ((HEADER + "\n" + ROW + "\n").encode(), ":1: Invalid JSON"),
    "json_array": (("[" + METRICS_LINE + "]\n").encode(), ":1:"),
    "text_for_number": ((METRICS_LINE.replace("0.9", '"high"') + "\n").encode(), ":1: roc_auc"),
    "number_for_ts": (
        (METRICS_LINE.replace('"2026-01-01T00:00:00Z"', "1767225600") + "\n").encode(),
        ":1: ts",
    ),
    "duplicated_keys": ((METRICS_LINE[:-1] + ', "roc_auc": 0.5}\n').encode(), None),
    "nan": ((METRICS_LINE.replace("0.9", "NaN") + "\n").encode(), ":1: roc_auc"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CORPUS))
def test_agent_cli_on_the_corpus(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, expected = JSONL_CORPUS[case]
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    out = tmp_path / "plan.yaml"
    code = agent_monitor.main(["--metrics", str(path), "--out", str(out)])
    _check(code, capsys.readouterr().err, path, expected)
    assert out.exists() == (expected is None)


@pytest.mark.parametrize(
    "content",
    [b"", b"[]", b"{}", b'{"overall_drift": "yes"}', BINARY[:64]],
    ids=["empty", "list", "object", "text", "binary"],
)
def test_agent_cli_rejects_a_bad_drift_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "drift.json"
    path.write_bytes(content)
    args = ["--metrics", str(DATA / "metrics_history.jsonl"), "--drift", str(path)]
    assert agent_monitor.main([*args, "--out", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not a drift report")
    assert err.count("\n") == 1


def test_cli_errors_never_leave_partial_files(tmp_path: Path) -> None:
    # A failing run must not leave a half-written output, nor a temp file beside it.
    out = tmp_path / "plan.yaml"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert agent_monitor.main(["--metrics", str(bad), "--out", str(out)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_interrupting_a_cli_returns_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(agent_monitor, "load_metrics", interrupted)
    assert agent_monitor.main(["--metrics", "x", "--out", str(tmp_path / "p.yaml")]) == 130
    time.sleep(0)
