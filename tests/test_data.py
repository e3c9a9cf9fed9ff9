"""The loader: what users really bring is accepted; what is broken fails in one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src import train as train_module
from src.errors import DataError
from tests.conftest import CSV_COLUMNS, DATA, FEATURES
from tests.conftest import read_adult as load_dataset

HEADER = ",".join(CSV_COLUMNS)
ROW = (
    "39,State-gov,Bachelors,13,Never-married,Adm-clerical,Not-in-family,"
    "White,Male,2174,0,40,United-States,0"
)
ROW_POSITIVE = ROW[:-1] + "1"


def _write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_load_dataset_reads_the_project_file() -> None:
    dataset = load_dataset(DATA / "adult_synth.csv")
    assert list(dataset.features.columns) == list(FEATURES)
    assert len(dataset.features) == 12_000
    assert set(dataset.target.unique()) == {0, 1}
    # UCI's "?" survive as missing values, so imputation is exercised for real.
    assert dataset.features["occupation"].isna().sum() > 0


def test_load_dataset_accepts_raw_uci_style_columns(tmp_path: Path) -> None:
    # income labels with and without ".", an extra fnlwgt, another column order, spaces, "?".
    header = "income, fnlwgt, " + ", ".join(reversed(FEATURES))
    values = list(reversed(ROW.split(",")[:-1]))
    missing = values.copy()
    missing[list(reversed(FEATURES)).index("workclass")] = "?"
    lines = [
        header,
        ">50K., 1234, " + ", ".join(values),
        "<=50K, 99, " + ", ".join(missing) + "  ",
    ]
    dataset = load_dataset(_write(tmp_path, "\n".join(lines) + "\n"))
    assert dataset.target.tolist() == [1, 0]
    assert dataset.notes == ("ignored extra column 'fnlwgt'",)
    assert list(dataset.features.columns) == list(FEATURES)
    assert dataset.features["workclass"].tolist()[0] == "State-gov"
    assert np.isnan(dataset.features["workclass"].tolist()[1])
    assert dataset.features["native_country"].tolist() == ["United-States"] * 2


def test_load_dataset_accepts_bom_crlf_and_empty_cells(tmp_path: Path) -> None:
    row = ROW.replace("Adm-clerical", "")
    path = _write(tmp_path, ("\ufeff" + HEADER + "\r\n" + row + "\r\n").encode())
    dataset = load_dataset(path)
    assert np.isnan(dataset.features["occupation"].iloc[0])
    assert dataset.features["age"].iloc[0] == 39


BAD_FILES = {
    "empty": (b"", "the file is empty"),
    "header_only": (HEADER + "\n", "no data rows"),
    "missing_column": (
        HEADER.replace("age,", "") + "\n" + ROW.split(",", 1)[1],
        "missing column(s) age",
    ),
    "bad_target": (
        HEADER + "\n" + ROW[:-1] + "yes\n",
        "column 'income_gt_50k': 'yes' is not a label value (the label is 1 or 0)",
    ),
    "bad_income_label": (
        HEADER.replace("income_gt_50k", "income") + "\n" + ROW[:-1] + "rich\n",
        "column 'income': 'rich' is not a label value",
    ),
    "text_in_numeric": (
        HEADER + "\n" + ROW + "\n" + ROW.replace("39,", "forty,", 1) + "\n",
        "line 3, column 'age': 'forty' is not a number",
    ),
    "semicolons": (HEADER.replace(",", ";") + "\n" + ROW.replace(",", ";"), "comma-separated"),
    "duplicated_column": (HEADER + ",age\n" + ROW + ",40\n", "column 'age' appears more than once"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not"),
    "no_target": (
        ",".join(FEATURES) + "\n" + ROW.rsplit(",", 1)[0] + "\n",
        "missing label column 'income_gt_50k'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_train_cli_rejects_bad_files_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, message = BAD_FILES[case]
    path = _write(tmp_path, content)
    code = train_module.main(
        ["--data", str(path), "--outdir", str(tmp_path / "out"), "--trials", "0"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert str(path) in err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_train_cli_reports_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train_module.main(["--data", str(tmp_path / "nope.csv"), "--outdir", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.csv'}: no such file\n"


def test_load_dataset_rejects_infinite_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "\n" + ROW.replace(",2174,", ",inf,") + "\n")
    with pytest.raises(DataError, match="line 2, column 'capital_gain': 'inf' is infinite"):
        load_dataset(path)


def test_load_dataset_without_target_for_drift(tmp_path: Path) -> None:
    path = _write(tmp_path, ",".join(FEATURES) + "\n" + ROW.rsplit(",", 1)[0] + "\n")
    dataset = load_dataset(path, require_target=False)
    assert dataset.target is None
    assert len(dataset.features) == 1


def test_split_needs_both_classes(tmp_path: Path) -> None:
    from src.training.data import split_dataset

    path = _write(tmp_path, HEADER + "\n" + "\n".join([ROW] * 10 + [ROW_POSITIVE]) + "\n")
    with pytest.raises(DataError, match="at least two rows of each class"):
        split_dataset(load_dataset(path), val_size=0.2, seed=0)
