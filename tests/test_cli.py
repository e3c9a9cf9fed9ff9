"""Every CLI parses before it imports: --help and a missing file answer at once (no pandas,
scikit-learn, LightGBM loaded), every default is shown, and no option is abbreviated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

CLIS = (
    "src.train",
    "src.drift",
    "src.agent_monitor",
    "src.monitor_window",
    "src.report",
    "src.dataset",
    "src.predict",
    "src.mitigation_table",
    "src.make_data",
    "src.registry",
    "src.loop.replay",
    "src.loop.migrate",
)
HEAVY = ("pandas", "sklearn", "lightgbm", "scipy", "matplotlib", "sqlalchemy", "fairlearn")
PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
print("CODE", code, file=sys.stderr)
print("LOADED", " ".join(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


def _probe(module: str, *args: str) -> tuple[int, str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.splitlines()
    code = int(next(line for line in lines if line.startswith("CODE")).split()[1])
    loaded = set(next(line for line in lines if line.startswith("LOADED")).split()[1:])
    return code, done.stdout + "\n".join(lines[:-2]), loaded


@pytest.mark.parametrize("module", CLIS)
def test_help_answers_before_the_heavy_imports(module: str) -> None:
    code, text, loaded = _probe(module, "--help")
    assert code == 0
    assert "usage:" in text
    assert not loaded & set(HEAVY), f"{module} --help loaded {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("src.train", ["--data", "missing.csv"]),
        ("src.drift", ["--ref", "missing.csv", "--new", "missing.csv"]),
        ("src.agent_monitor", ["--metrics", "missing.jsonl"]),
        ("src.monitor_window", ["--reference", "missing-folder"]),
        ("src.report", ["--artifacts", "missing-folder"]),
        ("src.mitigation_table", ["--artifacts", "missing-folder"]),
        ("src.predict", ["--data", "missing.csv", "--out", "out.csv"]),
        ("src.dataset", ["check", "--data", "missing.csv", "--spec", "missing.yaml"]),
    ],
)
def test_a_missing_file_is_one_line_before_the_heavy_imports(module: str, args: list[str]) -> None:
    code, text, loaded = _probe(module, *args)
    assert code == 2
    assert text.strip().startswith("error: missing")
    assert "no such file" in text
    assert not loaded & {"sklearn", "lightgbm", "matplotlib", "fairlearn"}


def test_help_shows_every_default_and_options_are_never_abbreviated() -> None:
    _, text, _ = _probe("src.drift", "--help")
    text = " ".join(text.split())  # argparse wraps its lines
    assert "(default: 0.2)" in text  # --threshold
    assert "(default: artifacts/drift_report.json)" in text
    code, text, _ = _probe("src.agent_monitor", "--metric", "x.jsonl")
    assert code == 2
    assert "unrecognized arguments: --metric" in text or "required: --metrics" in text
