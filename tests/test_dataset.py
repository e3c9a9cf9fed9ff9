"""The dataset spec, infer and check: every rule infer states, every problem check tells apart,
every bad spec in one line; and tables from other domains taken through infer, check, train,
serve, drift and batch scoring, as a new user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from src.dataset import __main__ as dataset_cli
from src.dataset.spec import ColumnSpec, adult_spec, load_spec, parse_spec
from src.errors import DataError
from tests import tables
from tests.conftest import ROOT

ADULT_TEXT = (ROOT / "src" / "dataset" / "adult.yaml").read_text()


def _infer(data: Path, out: Path, **told: Any) -> tuple[int, str, str]:
    args = ["infer", "--data", str(data), "--label", told["label"], "--out", str(out)]
    if told.get("positive") is not None:
        args += ["--positive", told["positive"]]
    if told.get("sensitive"):
        args += ["--sensitive", *told["sensitive"]]
    args += told.get("extra", [])
    done = subprocess.run(
        [sys.executable, "-m", "src.dataset", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    folder = tmp_path_factory.mktemp("adversarial")
    data, told = tables.adversarial_table(folder)
    code, out, err = _infer(data, folder / "spec.yaml", **told)
    assert code == 0, err
    return data, folder / "spec.yaml", out


# --- the spec ---------------------------------------------------------------------------------


def test_spec_the_adult_file_round_trips_and_names_the_challenges_sensitive_columns() -> None:
    spec = adult_spec()
    assert parse_spec(spec.to_yaml()) == spec
    assert set(spec.sensitive) == {"race", "sex", "native_country", "marital_status"}
    assert not set(spec.sensitive) & set(spec.model_inputs)
    assert spec.fairness_attributes == ("sex", "race")


def test_spec_a_changed_copy_is_checked_and_its_views_are_its_own() -> None:
    spec = adult_spec()
    assert spec.features  # the cached view, taken before the copy
    extra = ColumnSpec(name="tenure", kind="numeric")
    wider = spec.model_copy(update={"columns": (*spec.columns, extra)})
    assert wider.features == (*spec.features, "tenure")
    assert wider.digest != spec.digest
    with pytest.raises(ValueError, match="declared twice"):
        spec.model_copy(update={"columns": (*spec.columns, spec.columns[0])})


def test_spec_yes_and_no_stay_text_both_ways() -> None:
    text = ADULT_TEXT.replace("categories: [Female, Male]", "categories: [yes, no, on, off]")
    spec = parse_spec(text)
    assert spec.column("sex").categories == ("yes", "no", "on", "off")
    assert parse_spec(spec.to_yaml()) == spec
    assert "'yes'" in spec.to_yaml()  # quoted for readers that take it as a boolean


def _edit(change: Any) -> str:
    raw = yaml.safe_load(ADULT_TEXT)
    change(raw)
    return yaml.safe_dump(raw, sort_keys=False)


BAD_SPECS = {
    "not_yaml": ("name: [unclosed", "not valid YAML"),
    "not_a_mapping": ("- just\n- a list\n", "a dataset spec is a YAML mapping"),
    "unknown_key": (_edit(lambda r: r.update(colums=[])), "colums: Extra inputs are not permitted"),
    "bad_kind": (
        _edit(lambda r: r["columns"][0].update(kind="number")),
        "columns['age'].kind: Input should be",
    ),
    "min_above_max": (
        _edit(lambda r: r["columns"][0].update(min=200)),
        "column 'age': min 200.0 is above max 120.0",
    ),
    "declared_twice": (
        _edit(lambda r: r["columns"].append(dict(r["columns"][0]))),
        "column 'age' is declared twice",
    ),
    "label_as_column": (
        _edit(lambda r: r["columns"].append({"name": "income_gt_50k", "kind": "numeric"})),
        "the label 'income_gt_50k' is also declared as a column",
    ),
    "no_inputs": (
        _edit(lambda r: r.update(columns=[c for c in r["columns"] if c.get("sensitive")])),
        "no column is a model input",
    ),
    "numeric_sensitive_without_groups": (
        _edit(lambda r: r["columns"][0].update(sensitive=True)),
        "a numeric sensitive column needs groups",
    ),
    "boolean_category": (
        _edit(lambda r: r["columns"][1].update(categories=[True, False])),
        "categories are text or integers; got True (quote it)",
    ),
    "row_id_undeclared": (_edit(lambda r: r.update(row_id="nope")), "row_id 'nope' must be"),
    "fairness_not_sensitive": (
        _edit(lambda r: r.update(fairness=["age"])),
        "fairness names 'age', which is not a sensitive column",
    ),
    "future_version": (_edit(lambda r: r.update(spec_version=2)), "spec_version 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_spec_a_bad_spec_is_one_line_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = BAD_SPECS[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(DataError) as caught:
        load_spec(spec)
    assert message in str(caught.value)
    assert str(spec) in str(caught.value)
    code = dataset_cli.main(
        ["check", "--data", str(ROOT / "data" / "adult_synth.csv"), "--spec", str(spec)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


# --- infer -------------------------------------------------------------------------------------


def test_infer_states_each_decision_with_its_reason(adversarial: tuple[Path, Path, str]) -> None:
    _, spec_path, out = adversarial
    spec = load_spec(spec_path)
    kinds = {c.name: c.kind for c in spec.columns}
    assert kinds[tables.CUSTOMER] == "id"
    assert spec.row_id == tables.CUSTOMER
    assert kinds[tables.PLAN] == "categorical"
    assert spec.column(tables.PLAN).categories == (
        1,
        2,
        3,
        4,
        5,
    )
    assert kinds[tables.SIGNED] == "boolean"
    assert kinds[tables.SINCE] == "datetime"
    assert spec.event_time == tables.SINCE
    assert not spec.column(tables.SINCE).is_input
    assert kinds[tables.CONSTANT] == "excluded"
    assert kinds[tables.NOTES] == "text"
    assert kinds[tables.LEAK] == "excluded"
    assert "LEAKAGE" in spec.column(tables.LEAK).reason
    assert "carrier pigeon" in spec.column(tables.RARE).categories  # a category seen once
    assert set(spec.sensitive) == {tables.GENDER, tables.AGE}
    assert spec.column(tables.AGE).groups
    assert spec.column(tables.AGE).kind == "numeric"
    assert set(spec.missing) == {"", "?", "NA"}
    assert spec.column(tables.INCOME).nullable
    assert spec.column(tables.CITY).nullable
    assert spec.label.positive == "approved"
    assert spec.label.negative == "declined"
    lines = out.splitlines()
    for name, said in [
        (tables.CUSTOMER, "unique per row"),
        (tables.PLAN, "integer codes"),
        (tables.SIGNED, "true/false"),
        (tables.SINCE, "not an input"),
        (tables.CONSTANT, "constant"),
        (tables.NOTES, "free text"),
        (tables.LEAK, "SUSPECTED LEAKAGE"),
    ]:
        said_once = [line for line in lines if name in line and said in line]
        assert said_once, (name, said)
    assert next(line for line in lines if tables.LEAK in line).startswith("!!")


def test_infer_keeps_a_leaking_column_when_told(tmp_path: Path) -> None:
    data, told = tables.adversarial_table(tmp_path)
    code, out, _ = _infer(data, tmp_path / "spec.yaml", **told, extra=["--keep", tables.LEAK])
    assert code == 0
    assert load_spec(tmp_path / "spec.yaml").column(tables.LEAK).is_input
    assert "kept: --keep" in out


def test_infer_suggests_sensitive_columns_and_never_guesses_them(tmp_path: Path) -> None:
    data, told = tables.adversarial_table(tmp_path)
    code, out, _ = _infer(data, tmp_path / "spec.yaml", label=told["label"], positive="approved")
    assert code == 0
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.sensitive == ()  # not guessed
    assert f"'{tables.GENDER}' looks like a sensitive attribute" in out
    assert f"'{tables.AGE}' looks like a sensitive attribute" in out


def test_infer_an_id_like_column_cannot_look_like_leakage() -> None:
    """Out of fold, a value unique per row is always new: the score falls back to the prior."""
    import numpy as np

    from src.dataset.infer import out_of_fold_auc

    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.3).astype(float)
    folds = rng.integers(0, 5, 5000)
    assert out_of_fold_auc(np.arange(5000), y, folds) == pytest.approx(0.5, abs=0.02)
    assert out_of_fold_auc(y.astype(np.int64), y, folds) > 0.99  # the label itself: perfect


@pytest.mark.parametrize(
    ("told", "message"),
    [
        ({"label": tables.CITY}, "must have exactly two values; it has 5: 'Milano'"),
        ({"label": tables.LABEL, "positive": "yes"}, "--positive 'yes' is not a value"),
        ({"label": "nope"}, "the label 'nope' is not a column"),
        ({"label": tables.LABEL, "sensitive": ["nope"]}, "--sensitive names 'nope'"),
    ],
)
def test_infer_refuses_in_one_line(tmp_path: Path, told: dict[str, Any], message: str) -> None:
    data, _ = tables.adversarial_table(tmp_path, rows=300)
    code, _, err = _infer(data, tmp_path / "spec.yaml", **told)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert message in err, err
    assert not (tmp_path / "spec.yaml").exists()


# --- check -------------------------------------------------------------------------------------


def test_check_tells_each_problem_apart(
    tmp_path: Path, adversarial: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, spec_path, _ = adversarial
    assert dataset_cli.main(["check", "--data", str(data), "--spec", str(spec_path)]) == 0
    capsys.readouterr()
    import pandas as pd

    frame = pd.read_csv(data, dtype=str, keep_default_na=False).head(50)
    frame.loc[3, tables.CITY] = "Roma"  # outside the domain
    frame.loc[4, tables.INCOME] = "99999999"  # out of range
    frame.loc[5, tables.INCOME] = "lots"  # not a number
    frame = frame.drop(columns=[tables.KEYWORD]).assign(extra="x")  # missing, extra column
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    assert dataset_cli.main(["check", "--data", str(bad), "--spec", str(spec_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    expected = [
        f"column '{tables.KEYWORD}' is missing",
        "column 'extra' is not in the spec",
        f"line 5, column '{tables.CITY}': 'Roma' is not one of the 5 categories",
        f"line 6, column '{tables.INCOME}': '99999999' is outside the allowed range",
        f"line 7, column '{tables.INCOME}': 'lots' is not a number",
    ]
    for text in expected:
        assert sum(text in line for line in err) == 1, (text, err)
    assert len(err) == len(expected)


# --- tables from other domains, end to end ----------------------------------------------------


@pytest.fixture(scope="module", params=["arrests", "credit", "adversarial"])
def onboarded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A table taken from infer to a trained set, as a new user would: the table, the label,
    its positive value, the sensitive columns; nothing else."""
    from src.report import documents
    from src.training.train import train

    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "adversarial":
        data, told = tables.adversarial_table(folder)
    else:
        data, told = tables.outside_table(request.param, folder)
    code, _, err = _infer(data, folder / "spec.yaml", **told)
    assert code == 0, err
    spec = load_spec(folder / "spec.yaml")
    assert (
        dataset_cli.main(["check", "--data", str(data), "--spec", str(folder / "spec.yaml")]) == 0
    )
    result = train(data, folder / "set", spec=spec, trials=2, documents=documents)
    return {"name": request.param, "data": data, "spec": spec, "told": told, "result": result}


def test_outside_tables_train_with_their_own_label_and_sensitive_columns(
    onboarded: dict[str, Any],
) -> None:
    metrics, spec = onboarded["result"].metrics, onboarded["spec"]
    assert metrics["roc_auc"] > 0.6
    assert set(metrics["sensitive_excluded"]) == set(onboarded["told"]["sensitive"])
    assert not set(metrics["model_inputs"]) & set(spec.sensitive)
    assert set(metrics["fairness"]["by_attribute"]) == set(spec.fairness_attributes)
    card = (onboarded["result"].outdir / "model_card.html").read_text()
    assert spec.label.positive_means in card
    assert "adult" not in card.lower()


def test_outside_tables_are_served_from_their_spec(onboarded: dict[str, Any]) -> None:
    from src.service.factory import create_app
    from src.settings import Settings

    folder, spec = onboarded["result"].outdir, onboarded["spec"]
    rows = json.loads((folder / "sample_rows.json").read_text())["rows"]
    settings = Settings(ARTIFACTS_DIR=folder, LOG_PREDICTIONS=False)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json=rows[:5])
        assert answer.status_code == 200, answer.text
        expected = json.loads((folder / "sample_rows.json").read_text())["probabilities"][:5]
        got = [p["probability"] for p in answer.json()["predictions"]]
        assert got == pytest.approx(expected, abs=1e-9)
        categorical = next(c for c in spec.columns if c.is_input and c.kind == "categorical")
        bad = {**rows[0], categorical.name: "never-seen-value"}
        refused = client.post("/predict", json=[rows[0], bad])
        assert refused.status_code == 400
        error = refused.json()["errors"][0]
        assert (error["row"], error["field"]) == (1, categorical.name)
        assert str(categorical.categories[0]) in error["message"]
        openapi = client.get("/openapi.json").json()
        assert openapi["info"]["title"] == spec.title_or_name
        assert categorical.name in json.dumps(openapi, ensure_ascii=False)


def test_outside_tables_drift_and_batch_scoring(onboarded: dict[str, Any], tmp_path: Path) -> None:
    import pandas as pd

    data, spec_path = onboarded["data"], onboarded["data"].parent / "spec.yaml"
    frame = pd.read_csv(data, dtype=str, keep_default_na=False)
    half = len(frame) // 2
    frame.iloc[:half].to_csv(tmp_path / "ref.csv", index=False)
    frame.iloc[half:].to_csv(tmp_path / "new.csv", index=False)
    report = tmp_path / "drift.json"
    args = [
        "--ref",
        str(tmp_path / "ref.csv"),
        "--new",
        str(tmp_path / "new.csv"),
        "--spec",
        str(spec_path),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "src.drift", *args, "--out", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(report.read_text())["features"]) == set(onboarded["spec"].features)
    out = tmp_path / "scored.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.predict",
            "--data",
            str(data),
            "--out",
            str(out),
            "--artifacts",
            str(onboarded["result"].outdir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(out)
    rejects = pd.read_csv(tmp_path / "scored.csv.rejects.csv")
    assert len(scored) + len(rejects) == len(frame)
    if onboarded["spec"].row_id:
        assert onboarded["spec"].row_id in scored.columns
