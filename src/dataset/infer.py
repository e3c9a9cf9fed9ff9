"""Drafting a dataset spec from a table: one decision per column, each with its reason.

The rules (the same any careful reader of the table would apply, and the open complaints about
other tools' inference as requirements):
- a column unique per row is an id (excluded); a constant column is excluded;
- a text column with very many values is free text (excluded);
- an integer column with few values is categorical codes, and the output says so;
- text that parses as dates is a datetime, not an input unless asked; true/false is boolean;
- a column that alone separates the label almost perfectly, out of fold, is suspected leakage
  (excluded, loudly; --keep keeps it);
- sensitive columns are never guessed: names like sex or age are suggested, --sensitive confirms.
Nothing is inferred later, behind the user's back: what is not in the spec is an extra column.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from src.dataset.spec import (
    DEFAULT_MISSING_TOKENS,
    ColumnSpec,
    DatasetSpec,
    LabelSpec,
)
from src.dataset.table import NUMBER
from src.errors import DataError

# An integer column with at most this many values is categorical codes (Evidently's rule).
CODES_UP_TO = 10
# A text column whose distinct values exceed this share of its rows is free text (Evidently).
TEXT_SHARE = 0.5
# Categories beyond this many: values outside the domain are served as missing, not refused
# (TensorFlow Data Validation gives a domain up to 100 values).
DOMAIN_UP_TO = 100
# A single column that separates the label this well out of fold is suspected leakage.
LEAKAGE_AUC = 0.95
LEAKAGE_FOLDS = 5
LEAKAGE_ROWS = 50_000  # the leakage check's sample (seeded): ROC-AUC to about +-0.003
# there; the rest of infer reads every row
NUMERIC_BINS = 50
EDGE_ROWS = 20_000  # the bins' edges come from this many sampled values
RANGE_MARGIN = 0.1  # learned ranges allow this share of the seen span beyond each end
SEED = 0
SENSITIVE_NAMES = re.compile(
    r"(?i)(^|[^a-z])(sex|gender|race|racial|ethnic\w*|colou?r|age|religio\w*|nationality|"
    r"national|citizen\w*|native\w*|country|marital\w*|married|pregnan\w*|disab\w*|afam|"
    r"black|white)([^a-z]|$)"
)
ID_NAMES = re.compile(r"(?i)(^id$|_id$|^id_|uuid|guid|^key$|rownames|row_?num|^index$)")
DATE_LIKE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}|^\d{1,2}/\d{1,2}/\d{2,4}|^\d{4}/\d{1,2}/\d{1,2}")


@dataclass
class Decision:
    """What infer made of one column, and why (one printed line)."""

    column: str
    kind: str
    reason: str
    loud: bool = False

    def line(self, width: int) -> str:
        mark = "!! " if self.loud else "   "
        return f"{mark}{self.column:<{width}}  {self.kind:<12} {self.reason}"


@dataclass
class Profile:
    """A column as read: its values by type, distinct values, missing count."""

    name: str
    n: int
    missing: int
    kind: str  # number, boolean, datetime, text
    integer: bool = False
    distinct: int = 0
    values: np.ndarray | None = None  # numbers (NaN for missing)
    texts: list[str] = field(default_factory=list)  # distinct texts, for text columns
    codes: np.ndarray | None = None  # per row: index into texts, -1 for missing
    tokens: set[str] = field(default_factory=set)  # missing tokens seen
    monotonic: bool = False
    mean_length: float = 0.0
    low: float = math.nan  # numbers: the smallest and largest present value
    high: float = math.nan


@dataclass
class Draft:
    spec: DatasetSpec
    decisions: list[Decision]
    notes: list[str]


# --- reading the columns ------------------------------------------------------------------------


def _number_texts(texts: list[str]) -> tuple[bool, bool]:
    """(every text is a number, every one an integer)."""
    if not texts:
        return False, False
    pattern = re.compile(NUMBER)
    if not all(pattern.match(t) for t in texts):
        return False, False
    numbers = [float(t) for t in texts]
    finite = [x for x in numbers if math.isfinite(x)]
    return True, all(x.is_integer() for x in finite)


def _dates(texts: list[str]) -> bool:
    import pandas as pd

    shown = texts[:1000]
    if not shown or not all(DATE_LIKE.match(t) for t in shown):
        return False
    parsed = pd.to_datetime(pd.Series(shown), errors="coerce", format="mixed", utc=True)
    return bool(parsed.notna().mean() >= 0.95)


def profile_column(name: str, column: pa.ChunkedArray, tokens: frozenset[str]) -> Profile:
    """Read one column's type and values, whatever Arrow made of it."""
    n = len(column)
    array = column.combine_chunks() if not pa.types.is_dictionary(column.type) else column
    kind_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_boolean(kind_type):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        missing = int(np.isnan(values).sum())
        return Profile(name, n, missing, "boolean", values=values, distinct=2)
    if pa.types.is_integer(kind_type) or pa.types.is_floating(kind_type):
        values = np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
        return _numbers(name, n, values, pa.types.is_integer(kind_type), set())
    if pa.types.is_timestamp(kind_type) or pa.types.is_date(kind_type):
        missing = int(pc.sum(pc.is_null(array)).as_py() or 0)
        return Profile(name, n, missing, "datetime", distinct=n - missing)
    return _texts(name, n, column, tokens)


def _distinct_numbers(values: np.ndarray) -> np.ndarray:
    """The sorted distinct non-missing values (Arrow's hash table: no sort of a million rows)."""
    unique = pc.unique(pa.array(values, from_pandas=True)).drop_null().to_numpy()
    return np.sort(unique)


def _integral(present: np.ndarray) -> bool:
    """Every value a whole number (a thousand of them first: most float columns fail there)."""
    head = present[:1000]
    if not np.array_equal(head, np.round(head)):
        return False
    return bool(np.array_equal(present, np.round(present)))


def _numbers(name: str, n: int, values: np.ndarray, integer: bool, tokens: set[str]) -> Profile:
    present = values[~np.isnan(values)]
    integer = integer or bool(len(present) and _integral(present))
    low, high = (float(present.min()), float(present.max())) if len(present) else (math.nan,) * 2
    if not len(present):
        distinct = 0
    elif integer:  # codes, ids and constants are told apart by their count of values
        distinct = int(pc.count_distinct(pa.array(present)).as_py())
    else:  # a measurement: only whether it is constant matters, not how many values it has
        distinct = 1 if low == high else len(present)
    unique_rows = integer and distinct == len(present)
    monotonic = bool(unique_rows and len(present) > 1 and np.all(np.diff(present) > 0))
    return Profile(
        name,
        n,
        int(n - len(present)),
        "number",
        integer=integer,
        distinct=distinct,
        values=values,
        tokens=tokens,
        monotonic=monotonic,
        low=low,
        high=high,
    )


def _texts(name: str, n: int, column: pa.ChunkedArray, tokens: frozenset[str]) -> Profile:
    from src.dataset.table import combined, distinct_codes

    codes, raw = distinct_codes(combined(column))
    texts = [None if v is None else str(v).strip() for v in raw]
    seen_tokens = {t for t in texts if t is not None and t in tokens}
    present = sorted({t for t in texts if t is not None and t not in tokens})
    is_number, integer = _number_texts(present)
    slot = {t: i for i, t in enumerate(present)}
    remap = np.array([slot.get(t, -1) if t is not None else -1 for t in texts] + [-1])
    row_codes = remap[codes]
    missing = int((row_codes < 0).sum())
    if is_number:
        numbers = np.array([float(t) for t in present] + [np.nan])[row_codes]
        return _numbers(name, n, numbers, integer, seen_tokens)
    lowered = {t.lower() for t in present}
    kind = "text"
    if present and lowered <= {"true", "false"}:
        kind = "boolean"
    elif _dates(present):
        kind = "datetime"
    lengths = [len(t) for t in present[:5000]]
    return Profile(
        name,
        n,
        missing,
        kind,
        distinct=len(present),
        texts=present,
        codes=row_codes,
        tokens=seen_tokens,
        mean_length=float(np.mean(lengths)) if lengths else 0.0,
    )


# --- the label ----------------------------------------------------------------------------------


def _label_values(profile: Profile) -> list[Any]:
    if profile.kind == "number":
        values = _distinct_numbers(profile.values)
        return [int(v) if profile.integer else float(v) for v in values]
    if profile.kind == "boolean" and profile.values is not None:
        return [bool(v) for v in np.unique(profile.values[~np.isnan(profile.values)])]
    return list(profile.texts)


def label_targets(profile: Profile, positive: Any) -> np.ndarray:
    """1 for the positive value, 0 for the other, -1 where the label is missing."""
    if profile.kind == "number" or (profile.kind == "boolean" and profile.values is not None):
        values = profile.values
        out = np.where(np.isnan(values), -1, (values == float(positive)).astype(np.int8))
        return out.astype(np.int8)
    texts = profile.texts
    hit = np.array([_same(t, positive) for t in texts] + [False])
    codes = profile.codes
    return np.where(codes < 0, -1, hit[codes].astype(np.int8)).astype(np.int8)


def _same(text: str, value: Any) -> bool:
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    return text == str(value)


def choose_positive(profile: Profile, given: str | None) -> tuple[Any, Any, str]:
    """(positive, negative, why). Exactly two values, or DataError naming them."""
    values = _label_values(profile)
    if len(values) != 2:
        shown = ", ".join(repr(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
        raise DataError(
            f"the label '{profile.name}' must have exactly two values; it has {len(values)}: "
            f"{shown}"
        )
    if given is not None:
        match = [v for v in values if _same(str(v), given) or str(v) == given]
        if not match:
            raise DataError(
                f"--positive {given!r} is not a value of the label '{profile.name}' "
                f"({values[0]!r} or {values[1]!r})"
            )
        positive = match[0]
        return positive, next(v for v in values if v != positive), "as given (--positive)"
    lowered = {str(v).lower(): v for v in values}
    for yes, no in (("1", "0"), ("true", "false"), ("yes", "no"), ("y", "n")):
        if set(lowered) == {yes, no}:
            return lowered[yes], lowered[no], f"'{yes}' reads as the positive class"
    counts = {v: int((label_targets(profile, v) == 1).sum()) for v in values}
    positive = min(values, key=lambda v: (counts[v], str(v)))
    negative = next(v for v in values if v != positive)
    return positive, negative, "the rarer value (pass --positive to choose the other)"


# --- leakage ------------------------------------------------------------------------------------


def _codes_for_leakage(profile: Profile, sample: np.ndarray) -> np.ndarray:
    """Each sampled row's bin: categories as they are, numbers in quantile bins, missing last."""
    if profile.kind == "number" or profile.codes is None:
        values = (
            profile.values[sample] if profile.values is not None else np.full(len(sample), np.nan)
        )
        present = values[~np.isnan(values)][:EDGE_ROWS]  # the sample is random: its head too
        if not len(present):
            return np.zeros(len(sample), dtype=np.int64)
        edges = np.unique(np.quantile(present, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
        bins = np.searchsorted(edges, values, side="right")
        return np.where(np.isnan(values), len(edges) + 1, bins).astype(np.int64)
    codes = profile.codes[sample]
    return np.where(codes < 0, codes.max(initial=0) + 1, codes).astype(np.int64)


def out_of_fold_auc(bins: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float:
    """ROC-AUC of a one-column model scored out of fold: each row gets its bin's positive rate
    in the other folds (smoothed; a bin never seen there gets the overall rate). An id-like
    column sees only new values out of fold, so it cannot look perfect."""
    k = int(folds.max()) + 1
    width = int(bins.max()) + 1
    key = folds * width + bins
    positives = np.bincount(key, weights=y, minlength=k * width).reshape(k, width)
    totals = np.bincount(key, minlength=k * width).reshape(k, width)
    prior = y.mean()
    other_pos = positives.sum(axis=0) - positives
    other_n = totals.sum(axis=0) - totals
    score = (other_pos + prior) / (other_n + 1.0)  # fold x bin
    flat = score.ravel()
    pos, tot = positives.ravel(), totals.ravel()
    neg = tot - pos
    order = np.argsort(flat, kind="stable")
    flat, pos, neg = flat[order], pos[order], neg[order]
    # Ties (equal scores) count half: group equal scores.
    starts = np.flatnonzero(np.r_[True, np.diff(flat) != 0])
    pos_g, neg_g = np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)
    below = np.cumsum(neg_g) - neg_g
    total_pos, total_neg = pos_g.sum(), neg_g.sum()
    if total_pos == 0 or total_neg == 0:
        return 0.5
    return float(((below + 0.5 * neg_g) * pos_g).sum() / (total_pos * total_neg))


def leakage_aucs(
    profiles: dict[str, Profile], targets: np.ndarray, names: list[str]
) -> dict[str, float]:
    labelled = np.flatnonzero(targets >= 0)
    rng = np.random.default_rng(SEED)
    sample = np.sort(rng.choice(labelled, size=min(LEAKAGE_ROWS, len(labelled)), replace=False))
    y = targets[sample].astype(np.float64)
    folds = rng.integers(0, LEAKAGE_FOLDS, len(sample))
    return {
        name: out_of_fold_auc(_codes_for_leakage(profiles[name], sample), y, folds)
        for name in names
    }


# --- one decision per column --------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What the user said: the label, its positive value, the sensitive columns (confirmed),
    and the overrides."""

    label: str
    positive: str | None = None
    sensitive: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()  # suspected leakage kept anyway
    numeric: tuple[str, ...] = ()  # integer codes kept as numbers
    categorical: tuple[str, ...] = ()  # numbers read as categories
    inputs: tuple[str, ...] = ()  # datetime columns the model takes (as days since 1970)
    name: str = "dataset"


def _range(low: float, high: float, integer: bool) -> tuple[float, float, str]:
    margin = (high - low) * RANGE_MARGIN
    allowed_low, allowed_high = low - margin, high + margin
    if low >= 0:
        allowed_low = max(allowed_low, 0.0)
    if integer:
        allowed_low, allowed_high = math.floor(allowed_low), math.ceil(allowed_high)
    seen = f"{low:g}..{high:g}"
    return allowed_low, allowed_high, f"{seen} seen; allows [{allowed_low:g}, {allowed_high:g}]"


def _groups(values: np.ndarray) -> tuple[float, ...]:
    """Tertile thresholds, rounded to two significant digits (the spec is there to edit)."""
    present = values[~np.isnan(values)]
    cuts = np.quantile(present, [1 / 3, 2 / 3])
    rounded = sorted({float(f"{c:.2g}") for c in cuts if c > present.min()})
    return tuple(rounded) or (float(np.median(present)),)


def _categories(profile: Profile) -> tuple[Any, ...]:
    if profile.kind == "number":
        return tuple(int(v) for v in _distinct_numbers(profile.values))
    return tuple(profile.texts)


def _is_id(profile: Profile) -> bool:
    present = profile.n - profile.missing
    if profile.distinct != present or present < 2:
        return False
    if profile.kind == "text":
        return True
    return (
        profile.kind == "number"
        and profile.integer
        and (profile.monotonic or bool(ID_NAMES.search(profile.name)))
    )


def _sensitive(profile: Profile, nullable: bool) -> tuple[ColumnSpec, Decision]:
    """A confirmed sensitive column: numbers get groups (tertiles to start from), codes and text
    their groups as they are."""
    name = profile.name
    if profile.kind == "boolean":
        spec = ColumnSpec(name=name, kind="boolean", sensitive=True, nullable=nullable)
        return spec, Decision(name, "sensitive", "boolean (confirmed with --sensitive)")
    few_codes = profile.integer and profile.distinct <= CODES_UP_TO
    if profile.kind == "number" and not few_codes:
        groups = _groups(profile.values)
        cut = ", ".join(f"{g:g}" for g in groups)
        spec = ColumnSpec(
            name=name, kind="numeric", sensitive=True, nullable=nullable, groups=groups
        )
        why = f"numeric, groups cut at {cut} (tertiles: edit `groups` to choose)"
        return spec, Decision(name, "sensitive", why)
    categories = _categories(profile)
    spec = ColumnSpec(
        name=name, kind="categorical", sensitive=True, nullable=nullable, categories=categories
    )
    why = f"{len(categories)} groups (confirmed with --sensitive)"
    return spec, Decision(name, "sensitive", why)


def decide(profile: Profile, options: Options) -> tuple[ColumnSpec, Decision]:
    """The spec's entry for one column (not the label), and the line that says why."""
    name, nullable = profile.name, profile.missing > 0
    present = profile.n - profile.missing
    if name in options.sensitive:
        return _sensitive(profile, nullable)
    if profile.distinct <= 1:
        reason = "constant" if present else "always missing"
        return _excluded(name, f"{reason}: carries nothing", "excluded")
    if _is_id(profile):
        why = "unique per row" + (", increasing" if profile.monotonic else "")
        return ColumnSpec(name=name, kind="id", reason=why), Decision(
            name, "id", f"{why}: excluded"
        )
    if profile.kind == "datetime":
        if name in options.inputs:
            spec = ColumnSpec(name=name, kind="datetime", input=True, nullable=nullable)
            return spec, Decision(name, "datetime", "dates; a model input as asked (--inputs)")
        spec = ColumnSpec(name=name, kind="datetime", reason="dates are not inputs unless asked")
        return spec, Decision(name, "datetime", "dates: not an input (--inputs to make it one)")
    if profile.kind == "boolean":
        spec = ColumnSpec(name=name, kind="boolean", nullable=nullable)
        return spec, Decision(name, "boolean", "true/false")
    if profile.kind == "text":
        return _text_column(profile, nullable)
    return _number_column(profile, options, nullable)


def _excluded(name: str, reason: str, kind: str) -> tuple[ColumnSpec, Decision]:
    return ColumnSpec(name=name, kind="excluded", reason=reason), Decision(name, kind, reason)


def _text_column(profile: Profile, nullable: bool) -> tuple[ColumnSpec, Decision]:
    name, present = profile.name, profile.n - profile.missing
    if (
        profile.distinct > TEXT_SHARE * present and profile.distinct > 20
    ) or profile.mean_length > 60:
        why = f"{profile.distinct:,} values in {present:,} rows"
        if profile.mean_length > 60:
            why = f"long text (about {profile.mean_length:.0f} characters)"
        spec = ColumnSpec(name=name, kind="text", reason=f"free text: {why}")
        return spec, Decision(name, "text", f"free text ({why}): excluded")
    categories = tuple(profile.texts)
    unknown = "missing" if len(categories) > DOMAIN_UP_TO else "reject"
    spec = ColumnSpec(
        name=name, kind="categorical", categories=categories, nullable=nullable, unknown=unknown
    )
    tail = "; a new value is served as missing" if unknown == "missing" else ""
    return spec, Decision(name, "categorical", f"{len(categories)} categories{tail}")


def _number_column(
    profile: Profile, options: Options, nullable: bool
) -> tuple[ColumnSpec, Decision]:
    name = profile.name
    codes = profile.integer and profile.distinct <= CODES_UP_TO and name not in options.numeric
    if codes or name in options.categorical:
        categories = (
            _categories(profile)
            if profile.integer
            else tuple(f"{v:g}" for v in _distinct_numbers(profile.values))
        )
        spec = ColumnSpec(name=name, kind="categorical", categories=categories, nullable=nullable)
        why = (
            f"integer codes ({profile.distinct} values: {', '.join(map(str, categories[:8]))}"
            f"{' ...' if len(categories) > 8 else ''}): categorical (--numeric {shlex.quote(name)} "
            "keeps it a number)"
            if codes
            else "numbers read as categories (--categorical)"
        )
        return spec, Decision(name, "categorical", why)
    low, high, why = _range(profile.low, profile.high, profile.integer)
    spec = ColumnSpec(name=name, kind="numeric", min=low, max=high, nullable=nullable)
    return spec, Decision(name, "numeric", why)


# --- the whole table ----------------------------------------------------------------------------


def read_for_infer(path: Any) -> pa.Table:
    """Every column, typed by Arrow's own inference (text dictionary-encoded); only the empty
    cell is missing here: other tokens are found column by column."""
    from pathlib import Path

    from src.dataset.table import _check_file, _csv_problem, _first_line, is_parquet, read_header

    path = Path(path)
    _check_file(path)
    if is_parquet(path):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: cannot read as Parquet ({_first_line(exc)})") from None
    from pyarrow import csv as pacsv

    names = read_header(path)
    try:
        table = pacsv.read_csv(
            path,
            # Large blocks: fewer chunks for every column's pass to stitch together.
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=8 << 20),
            convert_options=pacsv.ConvertOptions(
                null_values=[""],
                strings_can_be_null=True,
                auto_dict_encode=True,
                auto_dict_max_cardinality=100_000,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot parse as CSV: {_csv_problem(path, exc, names)}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows after the header")
    return table


def _check_names(table: pa.Table, options: Options) -> None:
    names = set(table.column_names)
    if options.label not in names:
        shown = ", ".join(table.column_names[:12])
        raise DataError(f"the label '{options.label}' is not a column (the columns: {shown})")
    for flag in ("sensitive", "keep", "numeric", "categorical", "inputs"):
        for name in getattr(options, flag):
            if name not in names:
                raise DataError(f"--{flag} names '{name}', which is not a column of the table")
            if name == options.label:
                raise DataError(f"--{flag} names the label '{name}'")


def _suggestions(decisions: list[Decision], options: Options) -> list[str]:
    out = []
    for decision in decisions:
        name = decision.column
        if name in options.sensitive or decision.kind in ("id", "text", "excluded"):
            continue
        if SENSITIVE_NAMES.search(name):
            out.append(
                f"'{name}' looks like a sensitive attribute: it stays a model input unless you "
                f"confirm it with --sensitive {shlex.quote(name)} (then it is measured, never used)"
            )
    return out


def draft_spec(table: pa.Table, options: Options, *, source: str = "") -> Draft:
    """The spec drafted from `table`, every decision with its reason, and the notes (label,
    leakage, suggestions) to print."""
    _check_names(table, options)
    tokens = frozenset(DEFAULT_MISSING_TOKENS)
    profiles = {
        name: profile_column(name, table.column(name), tokens) for name in table.column_names
    }
    label = profiles[options.label]
    positive, negative, why = choose_positive(label, options.positive)
    targets = label_targets(label, positive)
    notes = [f"label '{options.label}': positive {positive!r}, negative {negative!r} ({why})"]
    if (targets < 0).any():
        notes.append(f"{int((targets < 0).sum())} rows have no label: training leaves them out")
    columns, decisions = [], []
    for name, profile in profiles.items():
        if name != options.label:
            column, decision = decide(profile, options)
            columns.append(column)
            decisions.append(decision)
    columns, decisions = _leakage(columns, decisions, profiles, targets, options)
    notes += _suggestions(decisions, options)
    spec = _assemble(table, options, columns, profiles, (positive, negative), source)
    return Draft(spec, decisions, notes)


def _leakage(
    columns: list[ColumnSpec],
    decisions: list[Decision],
    profiles: dict[str, Profile],
    targets: np.ndarray,
    options: Options,
) -> tuple[list[ColumnSpec], list[Decision]]:
    """Inputs that alone separate the label (out-of-fold ROC-AUC >= LEAKAGE_AUC): excluded,
    said loudly, unless --keep keeps them."""
    candidates = [c.name for c in columns if c.is_input and c.kind != "datetime"]
    aucs = leakage_aucs(profiles, targets, candidates)
    for i, column in enumerate(columns):
        auc = aucs.get(column.name)
        if auc is None or auc < LEAKAGE_AUC:
            continue
        if column.name in options.keep:
            decisions[
                i
            ].reason += (
                f" (alone it separates the label: out-of-fold ROC-AUC {auc:.3f}; kept: --keep)"
            )
            decisions[i].loud = True
            continue
        reason = (
            f"SUSPECTED LEAKAGE: alone it separates the label (out-of-fold ROC-AUC {auc:.3f}); "
            f"excluded (--keep {shlex.quote(column.name)} keeps it)"
        )
        columns[i] = ColumnSpec(name=column.name, kind="excluded", reason=reason)
        decisions[i] = Decision(column.name, "excluded", reason, loud=True)
    return columns, decisions


def _assemble(
    table: pa.Table,
    options: Options,
    columns: list[ColumnSpec],
    profiles: dict[str, Profile],
    label: tuple[Any, Any],
    source: str,
) -> DatasetSpec:
    ids = [c.name for c in columns if c.kind == "id"]
    times = [c.name for c in columns if c.kind == "datetime" and not c.input]
    seen = set().union(*(p.tokens for p in profiles.values()))
    missing = tuple(["", *sorted(seen - {""})])
    positive, negative = label
    if not any(c.is_input for c in columns):
        raise DataError(
            "no column is left as a model input (every one is excluded, an id or sensitive)"
        )
    return DatasetSpec(
        name=options.name,
        title=f"{options.name} classifier",
        description=f"Drafted by python -m src.dataset infer from {source or 'a table'} "
        f"({table.num_rows:,} rows); confirm it before training.",
        label=LabelSpec(
            column=options.label,
            positive=positive,
            negative=negative,
            positive_means=f"{options.label} = {positive}",
            negative_means=f"{options.label} = {negative}",
        ),
        missing=missing,
        row_id=ids[0] if len(ids) == 1 else None,
        event_time=times[0] if len(times) == 1 else None,
        columns=tuple(columns),
    )
