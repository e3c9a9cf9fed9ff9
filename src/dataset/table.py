"""Reading a table (CSV or Parquet) the way its spec describes it, and finding what breaks it.

One reader serves every purpose: training (the first problem is an error), checking (every
problem, listed), scoring (bad rows set aside with their reason) and drift (values outside the
domain or the range are what drift measures, so they are kept). The work is done by Arrow on
whole columns, and by dictionary on categorical ones (a million rows hold a few dozen values).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from src.dataset.spec import ColumnSpec, DatasetSpec, LabelEncoding
from src.errors import DataError

Purpose = Literal["train", "check", "score", "drift"]
PARQUET_SUFFIXES = (".parquet", ".pq")
NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(?i:inf|infinity|nan)$"
TRUE_TEXT = frozenset({"true", "t", "yes", "y", "1"})
FALSE_TEXT = frozenset({"false", "f", "no", "n", "0"})
SECONDS_PER_DAY = 86_400.0
# How many of a problem's rows are kept to show (its count is always exact).
SHOWN_ROWS = 20


@dataclass(frozen=True)
class Dataset:
    """A table read by its spec: the features in spec order (numeric-like float64, categorical
    a pandas Categorical of text, NaN for missing), the label as 0/1, and the row ids and event
    times when the spec names those columns."""

    features: pd.DataFrame
    target: pd.Series | None
    notes: tuple[str, ...] = ()
    row_ids: pd.Series | None = None
    event_times: pd.Series | None = None


@dataclass(frozen=True)
class Problem:
    """One kind of fault in one column: how many rows, and the first ones with their values."""

    kind: str
    column: str
    count: int = 1
    rows: tuple[int, ...] = ()  # data rows, from 0 (line = row + 2 in a CSV with a header)
    values: tuple[Any, ...] = ()
    detail: str = ""

    def lines(self, source: str) -> list[str]:
        """One line per shown row (a column-wide problem: one line)."""
        if not self.rows:
            return [f"{source}: {self.detail}"]
        return [
            f"{source}: line {row + 2}, column '{self.column}': {_show(value)} {self.detail}"
            for row, value in zip(self.rows, self.values, strict=True)
        ]

    @property
    def first(self) -> str:
        return self.lines("")[0].removeprefix(": ")


@dataclass
class Parsed:
    """What reading found: the columns, and every problem."""

    features: dict[str, Any] = field(default_factory=dict)
    bad_rows: np.ndarray | None = None  # rows a problem was found in (scoring sets them aside)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


# --- the file -----------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")


def read_header(path: Path) -> list[str]:
    """The CSV's column names, surrounding spaces stripped."""
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
    names = [cell.strip() for cell in row]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: column '{name}' appears more than once")
        seen.add(name)
    return names


def _parquet_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read as Parquet ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet file."""
    path = Path(path)
    _check_file(path)
    return _parquet_names(path) if is_parquet(path) else read_header(path)


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_arrow(
    path: Path, names: list[str], wanted: Iterable[str], dictionary: Iterable[str] = ()
) -> pa.Table:
    """The wanted columns as Arrow: from a CSV as text (`dictionary` ones dictionary-encoded,
    every value exactly as written), from Parquet as stored."""
    wanted = [n for n in names if n in set(wanted)]
    if is_parquet(path):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path, columns=wanted)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: cannot read as Parquet ({_first_line(exc)})") from None
    from pyarrow import csv as pacsv

    encoded = set(dictionary)
    types = {
        n: pa.dictionary(pa.int32(), pa.string()) if n in encoded else pa.string() for n in wanted
    }
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=wanted,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot parse as CSV: {_csv_problem(path, exc, names)}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows after the header")
    return table


def _csv_problem(path: Path, exc: Exception, names: list[str]) -> str:
    message = _first_line(exc)
    match = re.search(r"Expected (\d+) columns, got (\d+)", message)
    if match:
        more = int(match.group(2)) > int(match.group(1))
        line = _line_with_fields(path, len(names))
        where = f" (line {line})" if line else ""
        if len(names) == 1:
            return f"the header has one column: is the file comma-separated?{where}"
        return f"a row has {'more' if more else 'fewer'} fields than the header{where}"
    if "UTF8" in message or "utf8" in message.lower():
        return "not a UTF-8 text file"
    return message


def _line_with_fields(path: Path, expected: int) -> int | None:
    """The first line whose field count differs from the header's (the slow path, on error)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if len(row) != expected:
                    return line
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


# --- columns --------------------------------------------------------------------------------------


def combined(column: pa.ChunkedArray) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()
        if column.num_chunks == 0:
            return pa.array([], type=column.type)
        indices = pa.concat_arrays([c.indices for c in column.chunks])
        return pa.DictionaryArray.from_arrays(indices, column.chunk(0).dictionary)
    return column.combine_chunks()


def distinct_codes(array: pa.Array) -> tuple[np.ndarray, list[Any]]:
    """(codes per row, -1 for null; the distinct values): dictionary-encode when not already."""
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    codes = array.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, array.dictionary.to_pylist()


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _problem(kind: str, name: str, mask: np.ndarray, values: Any, detail: str) -> Problem:
    rows = np.flatnonzero(mask)
    shown = rows[:SHOWN_ROWS]
    return Problem(
        kind,
        name,
        count=len(rows),
        rows=tuple(int(r) for r in shown),
        values=tuple(values[int(r)] for r in shown),
        detail=detail,
    )


class ColumnCheck:
    """One column's values and what went wrong, filled by the converters below."""

    def __init__(self, spec: ColumnSpec, n: int) -> None:
        self.spec = spec
        self.bad = np.zeros(n, dtype=bool)
        self.problems: list[Problem] = []
        self.notes: list[str] = []

    def fault(self, kind: str, mask: np.ndarray, raw: Any, detail: str) -> None:
        if mask.any():
            self.bad |= mask
            self.problems.append(_problem(kind, self.spec.name, mask, raw, detail))


def _raw_values(array: pa.Array) -> Any:
    """Per-row raw values, looked up only for the rows shown in a problem."""

    class _Lookup:
        def __getitem__(self, row: int) -> Any:
            return array[row].as_py()

    return _Lookup()


def numeric_column(
    array: pa.Array, column: ColumnCheck, tokens: frozenset[str], *, lenient: bool
) -> np.ndarray:
    """Float64, NaN for missing; text that is no number, infinities and values outside the
    spec's range are faults (outside the range is kept when `lenient`: drift measures it)."""
    spec = column.spec
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    text_input = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    if text_input:
        text = pc.utf8_trim_whitespace(array)
        missing = pc.or_kleene(pc.is_null(text), pc.is_in(text, value_set=pa.array(sorted(tokens))))
        present = pc.if_else(missing, pa.scalar(None, pa.string()), text)
        try:
            values = pc.cast(present, pa.float64())
        except pa.ArrowInvalid:
            number = pc.fill_null(pc.match_substring_regex(present, NUMBER), True)
            column.fault(
                "not a number",
                ~number.to_numpy(zero_copy_only=False),
                _raw_values(array),
                "is not a number",
            )
            values = pc.cast(
                pc.if_else(number, present, pa.scalar(None, pa.string())), pa.float64()
            )
    elif (
        pa.types.is_boolean(array.type)
        or pa.types.is_integer(array.type)
        or pa.types.is_floating(array.type)
        or pa.types.is_decimal(array.type)
    ):
        values = pc.cast(array, pa.float64())
    else:
        raise DataError(f"column '{spec.name}' is stored as {array.type}, not as numbers")
    out = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    valid = np.asarray(values.is_valid(), dtype=bool)
    out[~valid] = np.nan
    infinite = np.isinf(out)
    column.fault("infinite", infinite, _raw_values(array), "is infinite")
    if text_input:  # 'nan' written in a file is no number; a stored NaN is a missing value
        column.fault("not a number", np.isnan(out) & valid, _raw_values(array), "is not a number")
    out[infinite] = np.nan
    if not lenient and (spec.min is not None or spec.max is not None):
        low = -np.inf if spec.min is None else spec.min
        high = np.inf if spec.max is None else spec.max
        with np.errstate(invalid="ignore"):
            outside = (out < low) | (out > high)
        column.fault(
            "out of range",
            outside,
            _raw_values(array),
            f"is outside the allowed range [{low:g}, {high:g}]",
        )
    return out


def _category_text(value: Any, integer: bool) -> str | None:
    """A raw value as the category it names (integer codes as '3'); None if it names none."""
    text = _as_text(value)
    if not integer:
        return text
    try:
        number = float(text)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else None


def categorical_column(
    array: pa.Array, column: ColumnCheck, tokens: frozenset[str], *, lenient: bool
) -> pd.Categorical:
    """Text categories (sorted), NaN for missing. A value outside the domain is a fault, or
    missing when the spec says `unknown: missing` (counted in a note); kept when `lenient` or the
    column is sensitive (a new group is still a group)."""
    spec = column.spec
    codes, distinct = distinct_codes(array)
    integer = spec.integer_codes
    domain = {str(c) for c in spec.categories or ()}
    keep_unknown = lenient or spec.sensitive or not domain
    names: list[str | None] = []
    unknown: list[int] = []
    for i, value in enumerate(distinct):
        text = None if value is None else _category_text(value, integer)
        if value is None or _as_text(value) in tokens:
            names.append(None)
        elif text is not None and (text in domain or keep_unknown):
            names.append(text)
        else:
            names.append(None)
            unknown.append(i)
    if unknown:
        outside = np.isin(codes, unknown)
        if spec.unknown == "missing":
            shown = sorted({str(distinct[i]).strip() for i in unknown})[:5]
            column.notes.append(
                f"column '{spec.name}': {int(outside.sum())} values outside the domain "
                f"({', '.join(map(repr, shown))}) read as missing (unknown: missing)"
            )
        else:
            detail = f"is not one of the {len(domain)} categories the spec allows"
            column.fault("outside domain", outside, _raw_values(array), detail)
    categories = sorted({n for n in names if n is not None}, key=_category_order(integer))
    position = {name: i for i, name in enumerate(categories)}
    remap = np.array([position.get(n, -1) if n is not None else -1 for n in names] + [-1])
    return pd.Categorical.from_codes(remap[codes], categories=categories)


def _category_order(integer: bool) -> Any:
    return (lambda text: int(text)) if integer else (lambda text: text)


def boolean_column(array: pa.Array, column: ColumnCheck, tokens: frozenset[str]) -> np.ndarray:
    """1.0 / 0.0, NaN for missing: true/false, yes/no, 1/0 (any case) or a stored boolean."""
    if pa.types.is_boolean(array.type):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        return np.where(np.asarray(array.is_valid(), dtype=bool), values, np.nan)
    codes, distinct = distinct_codes(array)
    mapped, bad = [], []
    for i, value in enumerate(distinct):
        text = None if value is None else _as_text(value)
        if text is None or text in tokens:
            mapped.append(np.nan)
        elif text.lower() in TRUE_TEXT:
            mapped.append(1.0)
        elif text.lower() in FALSE_TEXT:
            mapped.append(0.0)
        else:
            mapped.append(np.nan)
            bad.append(i)
    if bad:
        column.fault(
            "not a boolean", np.isin(codes, bad), _raw_values(array), "is not true or false"
        )
    return np.append(np.asarray(mapped, dtype=np.float64), np.nan)[codes]


def datetime_column(array: pa.Array, column: ColumnCheck, tokens: frozenset[str]) -> pd.Series:
    """UTC timestamps, NaT for missing; text that is no date is a fault."""
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        return pd.Series(pd.to_datetime(array.to_pandas(), utc=True))
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    raw = pd.Series(array.to_pandas(), dtype=object)
    text = raw.where(raw.isna(), raw.astype(str).str.strip())
    text = text.where(~text.isin(tokens), None)
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
    column.fault(
        "not a date", (parsed.isna() & text.notna()).to_numpy(), _raw_values(array), "is not a date"
    )
    return parsed


def days_since_epoch(times: pd.Series) -> np.ndarray:
    """A datetime input as the model reads it: days since 1970-01-01 UTC, NaN for missing."""
    epoch = pd.Timestamp(0, tz="UTC")
    return ((times - epoch).dt.total_seconds() / SECONDS_PER_DAY).to_numpy(
        np.float64, na_value=np.nan
    )


def convert_column(
    array: pa.Array, spec: ColumnSpec, tokens: frozenset[str], *, lenient: bool
) -> tuple[Any, ColumnCheck]:
    """One column as the spec's kind says, with its faults."""
    column = ColumnCheck(spec, len(array))
    if spec.kind == "numeric":
        return numeric_column(array, column, tokens, lenient=lenient), column
    if spec.kind == "categorical":
        return categorical_column(array, column, tokens, lenient=lenient), column
    if spec.kind == "boolean":
        return boolean_column(array, column, tokens), column
    if spec.kind == "datetime":
        times = datetime_column(array, column, tokens)
        return (days_since_epoch(times) if spec.is_input else times), column
    values = array.cast(array.type.value_type) if pa.types.is_dictionary(array.type) else array
    return pd.Series(values.to_pandas(), dtype=object), column


# --- the label ---------------------------------------------------------------------------------


def _label_key(value: Any, numeric: bool) -> str | None:
    text = _as_text(value)
    if numeric:
        try:
            number = float(text)
        except ValueError:
            return text
        return str(int(number)) if number.is_integer() else repr(number)
    return text.lower() if text.lower() in ("true", "false") else text


def label_column(
    array: pa.Array, encoding: LabelEncoding, tokens: frozenset[str]
) -> tuple[np.ndarray, Problem | None, int]:
    """0/1 per row (-1 where the label is missing), a fault for any other value, and how many
    rows had no label."""
    numeric = all(
        isinstance(v, int | float) and not isinstance(v, bool)
        for v in (*encoding.positives, *encoding.negatives)
    )
    positives = {_label_key(v, numeric) for v in encoding.positives}
    negatives = {_label_key(v, numeric) for v in encoding.negatives}
    codes, distinct = distinct_codes(array)
    mapped, bad = [], []
    for i, value in enumerate(distinct):
        key = None if value is None or _as_text(value) in tokens else _label_key(value, numeric)
        if key is None:
            mapped.append(-1)
        elif key in positives:
            mapped.append(1)
        elif key in negatives:
            mapped.append(0)
        else:
            mapped.append(-1)
            bad.append(i)
    values = np.append(np.asarray(mapped, dtype=np.int8), -1)[codes]
    bad_rows = np.isin(codes, bad)
    problem = None
    if bad:
        allowed = " or ".join(repr(v) for v in (*encoding.positives, *encoding.negatives))
        problem = _problem(
            "bad label",
            encoding.column,
            bad_rows,
            _raw_values(array),
            f"is not a label value (the label is {allowed})",
        )
    missing = int(((values == -1) & ~bad_rows).sum())
    return values, problem, missing


# --- a whole table ---------------------------------------------------------------------------


def label_encoding(spec: DatasetSpec, names: Iterable[str]) -> LabelEncoding | None:
    """The label's encoding this file uses: its column, or another the spec allows."""
    present = set(names)
    return next((e for e in spec.label.encodings if e.column in present), None)


def wanted_columns(spec: DatasetSpec) -> list[str]:
    """The columns a reader takes from a table: the features, the row id, the event time."""
    extra = [c for c in (spec.row_id, spec.event_time) if c and c not in spec.features]
    return [*spec.features, *extra]


def parse_table(
    table: pa.Table, spec: DatasetSpec, *, lenient: bool = False
) -> tuple[dict[str, Any], np.ndarray, list[Problem], list[str]]:
    """Every wanted column converted: (values by column, rows with a fault, faults, notes)."""
    tokens = frozenset(spec.missing)
    values: dict[str, Any] = {}
    bad = np.zeros(table.num_rows, dtype=bool)
    problems: list[Problem] = []
    notes: list[str] = []
    for name in wanted_columns(spec):
        if name not in table.column_names:
            continue
        converted, column = convert_column(
            combined(table.column(name)), spec.column(name), tokens, lenient=lenient
        )
        values[name] = converted
        bad |= column.bad
        problems += column.problems
        notes += column.notes
    return values, bad, problems, notes


def missing_columns(spec: DatasetSpec, names: Iterable[str]) -> list[str]:
    present = set(names)
    return [name for name in spec.features if name not in present]


def extra_columns(spec: DatasetSpec, names: Iterable[str]) -> list[str]:
    known = {*spec.accepted, *(e.column for e in spec.label.encodings)}
    return [name for name in names if name not in known]


def features_frame(
    spec: DatasetSpec, values: dict[str, Any], index: pd.Index | None = None
) -> pd.DataFrame:
    return pd.DataFrame({name: values[name] for name in spec.features}, index=index)


def load_dataset(
    path: str | Path,
    spec: DatasetSpec,
    *,
    require_target: bool = True,
    lenient: bool = False,
) -> Dataset:
    """Read and validate a table by its spec; DataError with one line naming the file, the line,
    the column and the value of the first problem. Extra columns are ignored (with a note); so
    are rows without a label (with a note). `lenient` (drift) keeps values outside the domain or
    the range: drift is how they are seen."""
    path = Path(path)
    names = table_columns(path)
    absent = missing_columns(spec, names)
    if absent:
        hint = (
            " (the header has one column: is the file comma-separated?)" if len(names) == 1 else ""
        )
        raise DataError(f"{path}: missing column(s) {', '.join(absent)}{hint}")
    encoding = label_encoding(spec, names)
    if require_target and encoding is None:
        raise DataError(f"{path}: missing label column '{spec.label.column}'")
    categorical = [c.name for c in spec.columns if c.kind in ("categorical", "boolean")]
    wanted = [*wanted_columns(spec), *([encoding.column] if require_target and encoding else [])]
    table = read_arrow(
        path, names, wanted, dictionary=[*categorical, *([encoding.column] if encoding else [])]
    )
    values, _, problems, notes = parse_table(table, spec, lenient=lenient)
    if problems:
        first = problems[0]
        more = sum(p.count for p in problems) - 1
        tail = f" (and {more} more: python -m src.dataset check lists them)" if more else ""
        raise DataError(f"{path}: {first.first}{tail}")
    notes = [*(f"ignored extra column '{c}'" for c in extra_columns(spec, names)), *notes]
    target = None
    keep = np.ones(table.num_rows, dtype=bool)
    if require_target and encoding is not None:
        labels, problem, missing = label_column(
            combined(table.column(encoding.column)), encoding, frozenset(spec.missing)
        )
        if problem is not None:
            raise DataError(f"{path}: {problem.first}")
        if missing:
            keep = labels >= 0
            notes.append(f"{missing} rows have no label ('{encoding.column}'): left out")
        target = pd.Series(labels[keep], name="label").astype("int8").reset_index(drop=True)
    frame = features_frame(spec, values)
    if not keep.all():
        frame = frame[keep].reset_index(drop=True)
    row_ids = _optional(values, spec.row_id, keep)
    times = _optional(values, spec.event_time, keep)
    return Dataset(frame, target, tuple(notes), row_ids, times)


def _optional(values: dict[str, Any], name: str | None, keep: np.ndarray) -> pd.Series | None:
    if name is None or name not in values:
        return None
    series = pd.Series(values[name])
    return series[keep].reset_index(drop=True) if not keep.all() else series


def dataset_from_frames(
    spec: DatasetSpec, features: list[pd.DataFrame], targets: list[Any]
) -> Dataset:
    """One Dataset from several frames of features (a file's, the log's): the reader's dtypes,
    categories taken from every part."""
    frame = pd.concat(
        [part[list(spec.features)].astype(object) for part in features], ignore_index=True
    )
    tokens = frozenset(spec.missing)
    columns: dict[str, Any] = {}
    for name in spec.features:
        column = spec.column(name)
        if column.is_numeric:
            columns[name] = pd.to_numeric(frame[name]).astype("float64").to_numpy()
        else:
            text = [None if v is None or v != v else str(v) for v in frame[name]]
            columns[name], _ = convert_column(
                pa.array(text, pa.string()), column, tokens, lenient=True
            )
    target = pd.Series(np.concatenate([np.asarray(t) for t in targets]), name="label")
    return Dataset(features_frame(spec, columns), target.astype("int8"))


NUMBER_ONLY = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def request_value(column: ColumnSpec, text: Any) -> Any:
    """A table's raw value as a client would send it in JSON (numbers as numbers, true/false as
    booleans, the rest as text): what the contract is asked about a row of a table."""
    if text is None:
        return None
    if isinstance(text, bool | int | float):
        return text
    value = str(text).strip()
    if column.kind == "boolean" and value.lower() in TRUE_TEXT | FALSE_TEXT:
        return value.lower() in TRUE_TEXT
    if (column.kind == "numeric" or column.integer_codes) and re.match(NUMBER_ONLY, value):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return value


# --- back to a table's own form -----------------------------------------------------------------


def iso_from_days(days: float) -> str | None:
    if days != days:
        return None
    stamp = pd.Timestamp(round(days * SECONDS_PER_DAY * 1e6), unit="us", tz="UTC")
    return stamp.isoformat()


def as_table(spec: DatasetSpec, features: pd.DataFrame) -> pd.DataFrame:
    """Features as a table holds them (booleans true/false, datetime inputs as ISO text), so a
    file written from them reads back through the spec."""
    out = features.copy()
    for name in features.columns:
        column = spec.column(name)
        if column.kind == "boolean":
            out[name] = features[name].map({1.0: "true", 0.0: "false"})
        elif column.kind == "datetime" and column.is_input:
            out[name] = [iso_from_days(v) for v in features[name].to_numpy(np.float64)]
    return out


def _request_value(column: ColumnSpec, value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if column.kind == "boolean":
        return bool(value)
    if column.kind == "datetime":
        return iso_from_days(float(value))
    if column.kind == "categorical":
        return int(value) if column.integer_codes else str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def request_rows(spec: DatasetSpec, features: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them to /predict: JSON values, null for missing."""
    columns = [spec.column(name) for name in features.columns]
    return [
        {c.name: _request_value(c, v) for c, v in zip(columns, values, strict=True)}
        for values in features.astype(object).itertuples(index=False, name=None)
    ]


def rows_frame(spec: DatasetSpec, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Validated request rows as a features frame, the way a table is read (the reference
    path feeds it to the pickled pipeline)."""
    tokens = frozenset(spec.missing)
    columns: dict[str, Any] = {}
    for name in spec.features:
        column = spec.column(name)
        values = [row.get(name) for row in rows]
        if column.kind == "datetime":
            text = pa.array([None if v is None else str(v) for v in values], pa.string())
            times, _ = convert_column(text, column, tokens, lenient=True)
            columns[name] = times
        elif column.is_numeric:
            columns[name] = np.array(
                [np.nan if v is None else float(v) for v in values], dtype=np.float64
            )
        else:
            columns[name] = pd.Series(
                [np.nan if v is None else str(v) for v in values], dtype=object
            )
    return pd.DataFrame(columns)
