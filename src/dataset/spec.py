"""The dataset spec: one small YAML file, the only place a table is described.

It names the label and its positive value, the sensitive columns (never model inputs: kept for
fairness and drift), and every other column with its kind, its allowed range or categories, what
happens to a category outside its domain, and the tokens that mean missing. Training, the request
contract, the log, the statistics, drift, fairness, the gate and the card read it; a module that
needs a column asks the spec.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from src.errors import DataError

SPEC_VERSION = 1
Kind = Literal["numeric", "categorical", "boolean", "datetime", "text", "id", "excluded"]
Category = str | int
LabelValue = str | int | float | bool
# The imputer's fill value for a missing category (a category of its own: in the census an
# unknown occupation mostly means "not working"); another name if a table uses it as a value.
MISSING_CATEGORY = "missing"
DEFAULT_MISSING_TOKENS = ("", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A")
# Kinds a model can take as inputs (a datetime only when the spec asks for it).
INPUT_KINDS = ("numeric", "categorical", "boolean")
ADULT_SPEC = Path(__file__).with_name("adult.yaml")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _label_values(value: LabelValue | list[LabelValue]) -> tuple[LabelValue, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


class LabelEncoding(_Frozen):
    """Another way a file may hold the label: another column, other values."""

    column: str = Field(min_length=1)
    positive: LabelValue | list[LabelValue]
    negative: LabelValue | list[LabelValue]

    @property
    def positives(self) -> tuple[LabelValue, ...]:
        return _label_values(self.positive)

    @property
    def negatives(self) -> tuple[LabelValue, ...]:
        return _label_values(self.negative)


class LabelSpec(LabelEncoding):
    """The label: its column, the value that means the positive class, the other value, and what
    each means in words (the card and the API say them)."""

    positive_means: str = "positive"
    negative_means: str = "negative"
    also: tuple[LabelEncoding, ...] = ()

    @property
    def encodings(self) -> tuple[LabelEncoding, ...]:
        return (self, *self.also)


class ColumnSpec(_Frozen):
    """One column: its kind and, per kind, its domain."""

    name: str = Field(min_length=1, max_length=500)
    kind: Kind
    description: str = ""
    # Never a model input: kept to measure fairness and drift.
    sensitive: bool = False
    # The API accepts null for this column (it had missing values when the spec was drafted).
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[Category, ...] | None = None
    # A category outside the domain: a 400 (reject), or served as missing and counted (missing).
    unknown: Literal["reject", "missing"] = "reject"
    # Thresholds that cut a numeric sensitive column into groups: [25, 60] gives <25, 25-60, >=60.
    groups: tuple[float, ...] | None = None
    # A datetime column is a model input only when asked (its days since 1970 as a number).
    input: bool = False
    # Why an excluded column is left out.
    reason: str = ""

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        if "\x00" in name or name != name.strip():
            raise ValueError("a column name may not hold NUL or start or end with a space")
        return name

    @field_validator("categories", mode="before")
    @classmethod
    def _category_types(cls, values: Any) -> Any:
        for value in values or ():
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ValueError(f"categories are text or integers; got {value!r} (quote it)")
        return values

    @model_validator(mode="after")
    def _fits_its_kind(self) -> ColumnSpec:
        where = f"column '{self.name}'"
        if self.kind != "numeric" and (self.min is not None or self.max is not None):
            raise ValueError(f"{where}: min and max are for numeric columns")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{where}: min {self.min} is above max {self.max}")
        if self.categories is not None:
            if self.kind != "categorical":
                raise ValueError(f"{where}: categories are for categorical columns")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"{where}: a category is listed twice")
        no_domain = self.kind == "categorical" and not (self.sensitive or self.categories)
        if no_domain and self.unknown == "reject":
            raise ValueError(f"{where}: list its categories (or set unknown: missing)")
        if self.sensitive and self.kind == "numeric" and not self.groups:
            raise ValueError(f"{where}: a numeric sensitive column needs groups, e.g. [25, 60]")
        if self.groups is not None:
            if not (self.sensitive and self.kind == "numeric"):
                raise ValueError(f"{where}: groups are for numeric sensitive columns")
            if list(self.groups) != sorted(set(self.groups)) or not self.groups:
                raise ValueError(f"{where}: groups must be increasing thresholds")
        if self.sensitive and self.kind not in INPUT_KINDS:
            raise ValueError(f"{where}: a sensitive column is numeric, categorical or boolean")
        if self.input and self.kind != "datetime":
            raise ValueError(f"{where}: `input` is for datetime columns (others are by kind)")
        return self

    @property
    def is_input(self) -> bool:
        """Does the model take this column?"""
        if self.sensitive:
            return False
        return self.kind in INPUT_KINDS or (self.kind == "datetime" and self.input)

    @property
    def is_numeric(self) -> bool:
        """Held as a number in a table and encoded as one (booleans 0/1, datetimes as days)."""
        return self.kind in ("numeric", "boolean", "datetime")

    @property
    def integer_codes(self) -> bool:
        """A categorical column whose categories are integers (codes)."""
        return bool(self.categories) and all(isinstance(c, int) for c in self.categories or ())


class DatasetSpec(_Frozen):
    """A table, described: what training, serving, the log and monitoring read."""

    spec_version: int = SPEC_VERSION
    name: str = Field(min_length=1, max_length=100)
    title: str = ""
    description: str = ""
    intended_use: str = ""
    label: LabelSpec
    missing: tuple[str, ...] = ("",)
    row_id: str | None = None
    event_time: str | None = None
    # The sensitive columns the fairness report measures (default: every sensitive column).
    fairness: tuple[str, ...] | None = None
    # The acceptance bar: a model whose validation ROC-AUC is under it fails acceptance (train
    # exits 1, the gate refuses it). The default asks for no more than chance: set your use's.
    min_roc_auc: float = Field(0.5, ge=0.5, le=1.0)
    columns: tuple[ColumnSpec, ...] = Field(min_length=1)

    @field_validator("spec_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version != SPEC_VERSION:
            raise ValueError(
                f"spec_version {version} is not one this project reads ({SPEC_VERSION})"
            )
        return version

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = [c.name for c in self.columns]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"column '{doubled[0]}' is declared twice")
        if self.label.column in names:
            raise ValueError(f"the label '{self.label.column}' is also declared as a column")
        if not any(c.is_input for c in self.columns):
            raise ValueError("no column is a model input")
        by_name = dict(zip(names, self.columns, strict=True))
        for role, name, kinds in (
            ("row_id", self.row_id, ("id", "numeric", "categorical", "excluded")),
            ("event_time", self.event_time, ("datetime",)),
        ):
            if name is not None and (name not in by_name or by_name[name].kind not in kinds):
                raise ValueError(f"{role} '{name}' must be a declared {' or '.join(kinds)} column")
        for name in self.fairness or ():
            if name not in by_name or not by_name[name].sensitive:
                raise ValueError(f"fairness names '{name}', which is not a sensitive column")
        return self

    def model_copy(
        self, *, update: dict[str, Any] | None = None, deep: bool = False
    ) -> DatasetSpec:
        """A changed copy, validated again: pydantic's copy would skip the checks above and carry
        the cached views (features, digest) of the original."""
        del deep  # frozen all the way down: nothing to share by mistake
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self).model_validate({**fields, **(update or {})})

    # --- the views every consumer reads ---------------------------------------------------------

    @cached_property
    def by_name(self) -> dict[str, ColumnSpec]:
        return {c.name: c for c in self.columns}

    def column(self, name: str) -> ColumnSpec:
        return self.by_name[name]

    @cached_property
    def features(self) -> tuple[str, ...]:
        """Model inputs and sensitive columns, in the spec's order: what a table must hold, what
        the log keeps, what drift watches and what a row's identity is made of."""
        return tuple(c.name for c in self.columns if c.is_input or c.sensitive)

    @cached_property
    def model_inputs(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_input)

    @cached_property
    def numeric_inputs(self) -> tuple[str, ...]:
        """Inputs encoded as one number each (numeric, boolean, datetime), in spec order."""
        return tuple(c.name for c in self.columns if c.is_input and c.is_numeric)

    @cached_property
    def categorical_inputs(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_input and c.kind == "categorical")

    @cached_property
    def sensitive(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.sensitive)

    @cached_property
    def fairness_attributes(self) -> tuple[str, ...]:
        return self.fairness if self.fairness is not None else self.sensitive

    @cached_property
    def accepted(self) -> tuple[str, ...]:
        """Every field a request or a scored table may carry: the declared columns."""
        return tuple(c.name for c in self.columns)

    @cached_property
    def missing_category(self) -> str:
        """The imputer's fill value: a name no categorical column uses as a category."""
        used = {str(v) for c in self.columns for v in c.categories or ()}
        fill = MISSING_CATEGORY
        while fill in used:
            fill = f"<{fill}>"
        return fill

    @property
    def title_or_name(self) -> str:
        return self.title or f"{self.name} classifier"

    def to_yaml(self) -> str:
        return dump_yaml(self)

    @cached_property
    def digest(self) -> str:
        """The spec's content hash: two specs that say the same thing hash the same."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


# --- YAML: 1.2 booleans only, so `yes`, `no`, `on` and `off` stay text -----------------------


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Quote what a YAML 1.1 reader would take for a boolean, as the safe dumper does for ours.
    if re.fullmatch(r"(?i:y|n|yes|no|on|off)", value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    # A list of plain values on one line (categories, tokens, thresholds): the spec stays short.
    flow = all(isinstance(v, str | int | float | bool) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
    if value.is_integer() and abs(value) < 1e15:
        return dumper.represent_int(int(value))
    return dumper.represent_float(value)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(float, _represent_float)


def _plain(value: Any) -> Any:
    """The spec as YAML wants it: defaults left out, so a drafted spec stays short."""
    if isinstance(value, BaseModel):
        out = {}
        for name, field in type(value).model_fields.items():
            item = getattr(value, name)
            if item == field.default and name not in ("kind", "name", "column"):
                continue
            out[name] = _plain(item)
        return out
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def dump_yaml(spec: DatasetSpec) -> str:
    body = yaml.dump(_plain(spec), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return (
        f"# A dataset spec (python -m src.dataset infer drafts one; docs/dataset-spec.md).\n{body}"
    )


def _where(error: dict[str, Any], raw: dict[str, Any]) -> str:
    parts = []
    for part in error["loc"]:
        if isinstance(part, int) and parts == ["columns"]:
            column = (
                (raw.get("columns") or [None])[part]
                if part < len(raw.get("columns") or [])
                else None
            )
            name = column.get("name") if isinstance(column, dict) else None
            parts.append(f"[{name!r}]" if name is not None else f"[{part}]")
        else:
            parts.append(str(part))
    return ".".join(parts).replace(".[", "[")


def parse_spec(text: str, source: str = "spec") -> DatasetSpec:
    """A spec from YAML text; DataError with one line naming the source and the problem."""
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader with 1.2 booleans
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise DataError(f"{source}: not valid YAML{line}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{source}: a dataset spec is a YAML mapping (name, label, columns)")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = _where(first, raw)
        message = first["msg"].removeprefix("Value error, ")
        raise DataError(f"{source}: {where + ': ' if where else ''}{message}") from None


def load_spec(path: str | Path | None = None) -> DatasetSpec:
    """The spec in `path` (default: the Adult census spec shipped with the project)."""
    path = Path(path) if path is not None else ADULT_SPEC
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the spec ({type(exc).__name__})") from None
    return parse_spec(text, str(path))


def adult_spec() -> DatasetSpec:
    return load_spec(ADULT_SPEC)


def group_edges_label(edges: Sequence[float], index: int) -> str:
    """The name of group `index` cut by thresholds `edges`: '< 25', '25 to < 60', '>= 60'."""

    def show(x: float) -> str:
        return f"{x:g}"

    if index == 0:
        return f"< {show(edges[0])}"
    if index == len(edges):
        return f">= {show(edges[-1])}"
    return f"{show(edges[index - 1])} to < {show(edges[index])}"
