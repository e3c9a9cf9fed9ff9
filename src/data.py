"""Load census CSVs the way users really bring them, and split them for training."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.errors import DataError
from src.schema import (
    COLUMN_BY_NAME,
    FEATURES,
    NEGATIVE_LABEL,
    NUMERIC,
    POSITIVE_LABEL,
    RAW_TARGET,
    TARGET,
)

MISSING_MARKERS = ["", "?"]


@dataclass(frozen=True)
class Dataset:
    """Validated features in schema order: numerics float64, categoricals pandas Categorical,
    NaN for missing in both."""

    features: pd.DataFrame
    target: pd.Series | None
    notes: tuple[str, ...] = ()


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _read_header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if "\x00" in first:
        raise DataError(f"{path}: not a text CSV file (binary content)")
    row = next(csv.reader([first]), [])
    if not any(cell.strip() for cell in row):
        raise DataError(f"{path}: the first line is empty; expected a CSV header")
    return [_normalise(cell) for cell in row]


def _check_columns(path: Path, header: list[str], *, require_target: bool) -> list[str]:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column '{name}' appears more than once")
        seen.add(name)
    missing = [c for c in FEATURES if c not in seen]
    if missing:
        hint = ""
        if len(header) == 1:
            hint = " (the header has one column: is the file comma-separated?)"
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}{hint}")
    if require_target and TARGET not in seen and RAW_TARGET not in seen:
        raise DataError(f"{path}: missing target column '{TARGET}' (0/1) or '{RAW_TARGET}'")
    known = {*FEATURES, TARGET, RAW_TARGET}
    return [c for c in header if c not in known]


def _line_of(index: int) -> int:
    # The header is line 1; pandas' default index counts data rows from 0.
    return int(index) + 2


def _as_numeric(path: Path, name: str, column: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype("float64")
    else:
        values = pd.to_numeric(column, errors="coerce").astype("float64")
        bad = column.notna() & values.isna()
        if bad.any():
            i = bad.idxmax()
            raise DataError(
                f"{path}: column '{name}' must be numeric; line {_line_of(i)} has {column[i]!r}"
            )
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        i = int(np.argmax(infinite))
        raise DataError(f"{path}: column '{name}' has an infinite value on line {_line_of(i)}")
    return values


def _as_category(column: pd.Series) -> pd.Series:
    """A pandas Categorical, spaces stripped and "" made missing. The work is done on the
    distinct values only (a million rows hold a few dozen), and later consumers (drift counts,
    group metrics) reuse the codes instead of hashing strings again."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    cleaned = [str(u).strip() for u in uniques]
    names = sorted({c for c in cleaned if c})
    position = {name: i for i, name in enumerate(names)}
    # One slot per raw distinct value, plus a last one that code -1 (missing) lands on.
    remap = np.array([position.get(c, -1) for c in cleaned] + [-1], dtype=np.int64)
    categorical = pd.Categorical.from_codes(remap.take(codes), categories=names)
    return pd.Series(categorical, index=column.index, name=column.name)


def _target(path: Path, frame: pd.DataFrame) -> pd.Series:
    if TARGET in frame:
        raw = frame[TARGET]
        values = pd.to_numeric(raw, errors="coerce")
        bad = ~values.isin([0, 1])
        name = TARGET
    else:
        raw = frame[RAW_TARGET].str.strip().str.rstrip(".")
        values = raw.map({NEGATIVE_LABEL: 0, POSITIVE_LABEL: 1})
        bad = values.isna()
        name = RAW_TARGET
    if bad.any():
        i = bad.idxmax()
        allowed = "0 or 1" if name == TARGET else f"'{NEGATIVE_LABEL}' or '{POSITIVE_LABEL}'"
        raise DataError(
            f"{path}: target '{name}' must be {allowed}; line {_line_of(i)} has {frame[name][i]!r}"
        )
    return values.astype("int8").rename(TARGET)


def _read_frame(path: Path, wanted: set[str]) -> pd.DataFrame:
    """The wanted columns as text (numerics as pandas reads them), names normalised."""
    options: dict[str, Any] = {
        "sep": ",",
        "skipinitialspace": True,
        "encoding": "utf-8-sig",
    }
    try:
        # The names exactly as pandas reads them, mapped to their normalised form.
        raw_names = pd.read_csv(path, nrows=0, **options).columns
        names = {raw: _normalise(str(raw)) for raw in raw_names}
        with warnings.catch_warnings():
            # A first row longer than the header would be silently cut: make it an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                header=0,
                index_col=False,  # no usecols either: both would hide rows with extra fields
                dtype={raw: "object" for raw, name in names.items() if name not in NUMERIC},
                na_values=MISSING_MARKERS,
                keep_default_na=False,
                **options,
            )
        return frame.rename(columns=names)[[n for n in names.values() if n in wanted]]
    except pd.errors.ParserWarning:
        raise DataError(
            f"{path}: cannot parse as CSV: a row has more fields than the header"
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot parse as CSV: {first_line}") from None


def load_dataset(path: str | Path, *, require_target: bool = True) -> Dataset:
    """Read and validate a census CSV; raise DataError with one line naming the file and problem.

    Accepts any column order, `income` (<=50K / >50K, optional trailing '.') in place of
    `income_gt_50k`, extra columns (ignored, with a note), spaces around values, a UTF-8 BOM,
    and '?' or an empty cell as a missing value.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    header = _read_header(path)
    extra = _check_columns(path, header, require_target=require_target)
    wanted = {c for c in header if c in FEATURES or (require_target and c not in extra)}
    frame = _read_frame(path, wanted)
    if frame.empty:
        raise DataError(f"{path}: no data rows after the header")

    columns = {}
    for name in FEATURES:
        kind = COLUMN_BY_NAME[name].kind
        raw = frame[name]
        columns[name] = _as_numeric(path, name, raw) if kind == "numeric" else _as_category(raw)
    features = pd.DataFrame(columns)

    target = _target(path, frame) if require_target else None
    notes = tuple(f"ignored extra column '{c}'" for c in extra)
    return Dataset(features=features, target=target, notes=notes)


def dataset_from_frames(features: list[pd.DataFrame], targets: list[Any]) -> Dataset:
    """One Dataset from several frames of features (a file's, the log's): the loader's dtypes,
    categories taken from every part."""
    frame = pd.concat([part[list(FEATURES)].astype(object) for part in features], ignore_index=True)
    columns = {
        name: pd.to_numeric(frame[name]).astype("float64")
        if COLUMN_BY_NAME[name].kind == "numeric"
        else _as_category(frame[name])
        for name in FEATURES
    }
    target = pd.Series(np.concatenate([np.asarray(t) for t in targets]), name=TARGET)
    return Dataset(features=pd.DataFrame(columns), target=target.astype("int8"))


def split_dataset(
    dataset: Dataset, *, val_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Stratified train/validation split: (X_train, X_val, y_train, y_val)."""
    from sklearn.model_selection import train_test_split  # not at import: the drift CLI skips it

    if dataset.target is None:
        raise DataError("the dataset has no target column to split on")
    counts = dataset.target.value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise DataError("the target needs at least two rows of each class to split")
    x_train, x_val, y_train, y_val = train_test_split(
        dataset.features,
        dataset.target,
        test_size=val_size,
        random_state=seed,
        stratify=dataset.target,
    )
    return x_train, x_val, y_train, y_val
