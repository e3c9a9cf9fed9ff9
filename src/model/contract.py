"""The request contract: a Pydantic row type built from the dataset spec.

Pydantic is the one authority on what a valid request is and on every error message. The
serving fast path (src/model/encoder.py) may only accept rows this contract accepts. Every
column the spec declares may be sent (clients send whole records); the model inputs must be.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from src.dataset.spec import ColumnSpec, DatasetSpec

# Text a model does not read (sensitive groups, ids, notes) is accepted up to this length.
MAX_IGNORED_TEXT = 200
# NUL is no valid text here, and PostgreSQL cannot store it: refused at the contract, never a
# surprise for the log.
NO_NUL = r"^[^\x00]*$"


def parse_datetime(value: str) -> datetime:
    """An ISO-8601 date or date-time (UTC when it names no zone)."""
    from datetime import UTC

    stamp = datetime.fromisoformat(value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


def _is_datetime(value: str) -> str:
    try:
        parse_datetime(value)
    except ValueError:
        raise ValueError(
            "should be an ISO-8601 date or date-time, e.g. 2024-05-01T13:00:00Z"
        ) from None
    return value


Text = Annotated[str, Field(strict=True, max_length=MAX_IGNORED_TEXT, pattern=NO_NUL)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
DatetimeText = Annotated[str, Field(strict=True, max_length=64), AfterValidator(_is_datetime)]


@dataclass(frozen=True)
class InputContract:
    """What the trained model accepts, from its spec: each input's type and domain, which fields
    may be null, and the fields accepted and ignored."""

    spec: DatasetSpec

    @property
    def nullable(self) -> frozenset[str]:
        """Inputs that accept null (every other declared field does too: it is optional)."""
        return frozenset(c.name for c in self.spec.columns if c.is_input and c.nullable)

    def _input_type(self, column: ColumnSpec) -> Any:
        described = Field(description=column.description or None)
        if column.kind == "numeric":
            kind: Any = Annotated[
                float,
                Field(
                    strict=True,
                    allow_inf_nan=False,
                    ge=column.min,
                    le=column.max,
                    description=column.description or None,
                ),
            ]
        elif column.kind == "boolean":
            kind = Annotated[StrictBool, described]
        elif column.kind == "datetime":
            kind = Annotated[DatetimeText, described]
        elif column.unknown == "missing":
            # Any value: one outside the domain is served as missing (and counted).
            base = int if column.integer_codes else Text
            kind = Annotated[base, Field(strict=True, description=_known(column))]
        else:
            kind = Annotated[Literal.__getitem__(tuple(column.categories or ())), described]
        return kind | None if column.nullable else kind

    def _ignored_type(self, column: ColumnSpec) -> Any:
        note = "Accepted and ignored by the model" + (
            " (kept to measure fairness)." if column.sensitive else "."
        )
        if column.sensitive and column.kind == "numeric":
            kind: Any = Number
        elif column.sensitive and column.kind == "boolean":
            kind = StrictBool
        elif column.sensitive:
            kind = Text
        else:
            kind = Text | Annotated[int, Field(strict=True)] | Number | StrictBool
        return Annotated[kind | None, Field(description=f"{column.description} {note}".strip())]

    def field_type(self, name: str) -> Any:
        column = self.spec.column(name)
        return self._input_type(column) if column.is_input else self._ignored_type(column)

    def row_type(self) -> type:
        fields: dict[str, Any] = {}
        for column in self.spec.columns:
            wrap = Required if column.is_input else NotRequired
            fields[column.name] = wrap[self.field_type(column.name)]
        row = TypedDict("Row", fields)  # type: ignore[operator]
        row.__pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[attr-defined]
        return row

    def adapter(self, max_rows: int | None = None) -> TypeAdapter[list[dict[str, Any]]]:
        """A request: a list of 1..max_rows rows."""
        rows = Annotated[list[self.row_type()], Field(min_length=1, max_length=max_rows)]  # type: ignore[misc]
        return TypeAdapter(rows)

    def describe(self) -> list[dict[str, Any]]:
        """The input schema for /metadata: one entry per field, with its domain."""
        out = []
        for column in self.spec.columns:
            entry: dict[str, Any] = {
                "name": column.name,
                "kind": column.kind,
                "type": _json_type(column),
                "required": column.is_input,
                "nullable": column.nullable or not column.is_input,
                "used_by_model": column.is_input,
                "sensitive": column.sensitive,
                "description": column.description,
            }
            if column.is_input and column.kind == "numeric":
                entry.update(minimum=column.min, maximum=column.max)
            elif column.is_input and column.kind == "categorical":
                entry["allowed_values"] = list(column.categories or ())
                entry["outside_the_domain"] = column.unknown
            out.append(entry)
        return out


def _known(column: ColumnSpec) -> str:
    shown = ", ".join(map(str, (column.categories or ())[:20]))
    more = " ..." if len(column.categories or ()) > 20 else ""
    return (
        f"{column.description} Known values: {shown}{more}; any other value is served as missing."
    ).strip()


def _json_type(column: ColumnSpec) -> str:
    if column.kind == "numeric":
        return "number"
    if column.kind == "boolean":
        return "boolean"
    if column.kind == "categorical" and column.integer_codes:
        return "integer"
    return "string"


def format_errors(
    exc: ValidationError, spec: DatasetSpec, nullable: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Every error as {row, field, message, type}; row/field are null when they do not apply.
    For a field in `nullable`, the message says that null is allowed too."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err["loc"]
        row = loc[0] if loc and isinstance(loc[0], int) else None
        field = loc[1] if len(loc) > 1 else None
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown field '{field}'; the fields are: {', '.join(spec.accepted)}"
        elif err["type"] == "list_type" and not loc:
            message = "the body must be a JSON list of rows (objects)"
        elif err["type"] == "dict_type":
            message = "each row must be a JSON object"
        elif err["type"] == "string_pattern_mismatch":
            message = "text may not contain the NUL character (\\u0000)"
        elif field in nullable and err["type"] in ("literal_error", "float_type", "bool_type"):
            message = f"{message}, or null"
        errors.append({"row": row, "field": field, "message": message, "type": err["type"]})
    return errors
