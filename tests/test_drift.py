"""Drift: PSI by hand, KS by scipy, the planted shifts, honest noise levels, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from src import drift
from src.dataset.adult import PLANTED_SHIFTS
from src.monitoring.drift import EPSILON, compute_drift, fit_feature, noise_psi, psi
from tests.conftest import ADULT, CHALLENGE, CSV_COLUMNS, DATA, FEATURES
from tests.conftest import read_adult as load_dataset

REF = DATA / "adult_ref_sample.csv"
SHIFTED = DATA / "adult_shifted_sample.csv"


def _features(path: Path) -> pd.DataFrame:
    return load_dataset(path, require_target=False).features


def test_psi_matches_a_hand_computation() -> None:
    ref, new = np.array([50, 30, 20, 0]), np.array([25, 25, 25, 25])
    p = [0.5, 0.3, 0.2, EPSILON]
    q = [0.25, 0.25, 0.25, 0.25]
    expected = sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))
    assert psi(ref, new) == pytest.approx(expected, rel=1e-12)
    assert psi(ref, ref) == 0.0


def test_identical_samples_show_no_drift() -> None:
    ref = _features(REF)
    report = compute_drift(ADULT, ref, ref)
    assert report.overall_drift is False
    assert set(report.features.values()) == {0.0}
    for detail in report.details.values():
        assert detail["drifted"] is False
        if detail["kind"] == "numeric":
            assert detail["ks_statistic"] == 0.0


def test_the_planted_shifts_are_flagged_and_only_they() -> None:
    report = compute_drift(ADULT, _features(REF), _features(SHIFTED))
    assert report.overall_drift is True
    assert {n for n, d in report.details.items() if d["drifted"]} == set(PLANTED_SHIFTS)
    assert report.to_dict()["model_input_drift"] is True
    assert report.to_dict()["sensitive_drift"] is False
    for name, detail in report.details.items():
        if name not in PLANTED_SHIFTS:  # untouched features read as noise, not as drift
            assert detail["psi"] < detail["psi_noise_p95"] * 1.5


def test_ks_matches_scipy() -> None:
    ref, new = _features(REF), _features(SHIFTED)
    report = compute_drift(ADULT, ref, new)
    for name in ("age", "hours_per_week", "capital_gain"):
        expected = stats.ks_2samp(ref[name].dropna(), new[name].dropna())
        assert report.details[name]["ks_statistic"] == pytest.approx(expected.statistic, abs=1e-4)
        assert report.details[name]["ks_pvalue"] == pytest.approx(expected.pvalue, rel=1e-3)


def test_threshold_is_inclusive() -> None:
    ref, new = _features(REF), _features(SHIFTED)
    score = compute_drift(ADULT, ref, new).details["workclass"]["psi"]
    assert compute_drift(ADULT, ref, new, threshold=score).details["workclass"]["drifted"] is True
    assert (
        compute_drift(ADULT, ref, new, threshold=score + 1e-3).details["workclass"]["drifted"]
        is False
    )


def test_zero_heavy_numerics_keep_a_bin_for_their_point_mass() -> None:
    column = pd.Series([0.0] * 90 + list(range(1, 11)), dtype=float)
    ref = fit_feature(ADULT.column("capital_gain"), column)
    assert 0.0 in ref.edges[ref.points]
    shifted = pd.Series([0.0] * 50 + list(range(1, 51)), dtype=float)
    counts, _, _ = ref.count(shifted)
    assert psi(ref.counts, counts) > 0.2  # half the zeros gone is drift, not "0 forever"


def test_outer_bins_are_open_so_new_extremes_still_count() -> None:
    ref = fit_feature(ADULT.column("age"), pd.Series(np.arange(20.0, 60.0)))
    counts, _, _ = ref.count(pd.Series([5.0, 200.0]))
    assert counts.sum() == 2
    assert counts[0] == 1
    assert counts[-2] == 1  # last value slot (the final slot counts missing values)


def test_categories_never_seen_are_listed_and_counted() -> None:
    ref = _features(REF)
    new = ref.copy()
    new["workclass"] = new["workclass"].astype(object)
    new.loc[new.index[:60], "workclass"] = "Gig-economy"
    detail = compute_drift(ADULT, ref, new).details["workclass"]
    assert detail["unseen_categories"] == ["Gig-economy"]
    assert detail["unseen_count"] == 60
    assert detail["drifted"] is True


def test_noise_level_agrees_with_the_analytic_approximation() -> None:
    # Under no drift, PSI ~ (k - 1)(1/n + 1/m) for k equally likely bins.
    counts = np.full(10, 50)
    mean, p95 = noise_psi(counts, 500, 500, seed=(0, 1))
    assert mean == pytest.approx(9 * (1 / 500 + 1 / 500), rel=0.2)
    assert p95 > mean


def test_constant_and_all_missing_columns_give_defined_results() -> None:
    ref = _features(REF)
    new = ref.copy()
    new["capital_loss"] = np.nan
    ref_constant = ref.copy()
    ref_constant["education_num"] = 9.0
    report = compute_drift(ADULT, ref_constant, new)
    text = json.dumps(report.to_dict(), allow_nan=False)  # no NaN anywhere
    assert "not observed" in text
    assert "constant in the reference" in text
    assert report.details["capital_loss"]["ks_statistic"] is None
    # A column with no value at all is not observed: reported, never counted as drift (issue 14:
    # a client that leaves out a field must not page anyone).
    assert report.details["capital_loss"]["observed"] is False
    assert report.details["capital_loss"]["drifted"] is False
    assert report.details["capital_loss"]["psi"] is None


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_writes_the_spec_shape_and_detail(tmp_path: Path) -> None:
    out = tmp_path / "drift_report.json"
    assert drift.main(["--ref", str(REF), "--new", str(SHIFTED), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report)[:3] == ["threshold", "overall_drift", "features"]
    assert report["threshold"] == 0.2
    assert set(report["features"]) == set(FEATURES)
    assert report["inputs"]["ref"]["sha256"]
    assert report["timestamp"].endswith("+00:00")
    detail = report["details"]["age"]
    for key in (
        "kind",
        "psi",
        "ks_statistic",
        "ks_pvalue",
        "n_ref",
        "n_new",
        "missing_rate_ref",
        "missing_rate_new",
        "role",
        "drifted",
        "psi_noise_p95",
    ):
        assert key in detail
    assert "chi2_pvalue" in report["details"]["workclass"]
    assert list(tmp_path.iterdir()) == [out]  # nothing left beside it


def test_cli_fail_on_drift_exits_1(tmp_path: Path) -> None:
    args = ["--ref", str(REF), "--new", str(SHIFTED), "--out", str(tmp_path / "r.json")]
    assert drift.main([*args, "--fail-on-drift"]) == 1  # 3 means a dependency did not answer
    same = ["--ref", str(REF), "--new", str(REF), "--out", str(tmp_path / "s.json")]
    assert drift.main([*same, "--fail-on-drift"]) == 0


@pytest.mark.skipif(
    not CHALLENGE.is_dir(), reason="../shared/challenge-data is not beside the project"
)
def test_cli_runs_on_the_challenge_samples(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    ref, new = CHALLENGE / "adult_ref_sample.csv", CHALLENGE / "adult_shifted_sample.csv"
    assert drift.main(["--ref", str(ref), "--new", str(new), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["features"]) == set(FEATURES)
    assert isinstance(report["overall_drift"], bool)


def _csv(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = ",".join(CSV_COLUMNS)
ROW = "39,Private,Bachelors,13,Never-married,Sales,Not-in-family,White,Male,0,0,40,United-States,0"


@pytest.mark.parametrize(
    ("new_text", "message"),
    [
        ("", "the file is empty"),
        (HEADER + "\n", "no data rows"),
        (HEADER.replace("age,", "years,", 1) + "\n" + ROW + "\n", "missing column(s)"),
        (
            HEADER + "\n" + ROW.replace(",40,", ",forty,") + "\n",
            "column 'hours_per_week': 'forty' is not a number",
        ),
        ("\x00\x01\x02binary", "not"),
    ],
)
def test_cli_rejects_bad_files_with_exit_2_and_keeps_the_old_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], new_text: str, message: str
) -> None:
    out = tmp_path / "report.json"
    out.write_text('{"old": true}')
    bad = _csv(tmp_path, "new.csv", new_text)
    assert drift.main(["--ref", str(REF), "--new", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(bad) in err
    assert message in err
    assert out.read_text() == '{"old": true}'


def test_cli_rejects_a_bad_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--ref", str(REF), "--new", str(REF), "--out", str(tmp_path / "r.json")]
    assert drift.main([*args, "--threshold", "-1"]) == 2
    assert "--threshold must be a positive number" in capsys.readouterr().err
