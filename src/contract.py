"""The request contract: a Pydantic row type built from the schema and the trained categories.

Pydantic is the one authority on what a valid request is and on every error message. The
serving fast path (src/predictor.py) may only accept rows this contract accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from src.schema import COLUMN_BY_NAME, MODEL_INPUTS, SENSITIVE

# Sensitive fields are accepted (clients send whole records) and never used by the model.
MAX_IGNORED_TEXT = 200
# NUL is no valid text here, and PostgreSQL cannot store it: refused at the contract, never a
# surprise for the log.
NO_NUL = r"^[^\x00]*$"


@dataclass(frozen=True)
class InputContract:
    """What the trained model accepts: categories seen in training, fields that may be null."""

    categories: dict[str, tuple[str, ...]]
    nullable: frozenset[str]

    def field_type(self, name: str) -> Any:
        column = COLUMN_BY_NAME[name]
        if column.kind == "numeric":
            kind: Any = Annotated[
                float,
                Field(
                    strict=True,
                    allow_inf_nan=False,
                    ge=column.minimum,
                    le=column.maximum,
                    description=column.description,
                ),
            ]
        else:
            kind = Annotated[
                Literal.__getitem__(self.categories[name]), Field(description=column.description)
            ]
        return kind | None if name in self.nullable else kind

    def row_type(self) -> type:
        fields: dict[str, Any] = {name: Required[self.field_type(name)] for name in MODEL_INPUTS}
        ignored = Annotated[
            str | None,
            Field(
                strict=True,
                max_length=MAX_IGNORED_TEXT,
                pattern=NO_NUL,
                description="Accepted and ignored.",
            ),
        ]
        fields.update({name: NotRequired[ignored] for name in SENSITIVE})
        row = TypedDict("Row", fields)  # type: ignore[operator]
        row.__pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[attr-defined]
        return row

    def adapter(self, max_rows: int | None = None) -> TypeAdapter[list[dict[str, Any]]]:
        """A request: a list of 1..max_rows rows."""
        rows = Annotated[list[self.row_type()], Field(min_length=1, max_length=max_rows)]  # type: ignore[misc]
        return TypeAdapter(rows)

    def describe(self) -> list[dict[str, Any]]:
        """The input schema for /metadata: one entry per field, categoricals with allowed values."""
        out = []
        for name in (*MODEL_INPUTS, *SENSITIVE):
            column = COLUMN_BY_NAME[name]
            entry: dict[str, Any] = {
                "name": name,
                "type": "number" if column.kind == "numeric" else "string",
                "required": name in MODEL_INPUTS,
                "nullable": name in self.nullable or name in SENSITIVE,
                "used_by_model": name in MODEL_INPUTS,
                "description": column.description,
            }
            if name in MODEL_INPUTS and column.kind == "numeric":
                entry.update(minimum=column.minimum, maximum=column.maximum)
            elif name in MODEL_INPUTS:
                entry["allowed_values"] = list(self.categories[name])
            out.append(entry)
        return out


def format_errors(
    exc: ValidationError, nullable: frozenset[str] = frozenset()
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
            message = (
                f"unknown field '{field}'; the fields are: {', '.join((*MODEL_INPUTS, *SENSITIVE))}"
            )
        elif err["type"] == "list_type" and not loc:
            message = "the body must be a JSON list of rows (objects)"
        elif err["type"] == "dict_type":
            message = "each row must be a JSON object"
        elif err["type"] == "string_pattern_mismatch":
            message = "text may not contain the NUL character (\\u0000)"
        elif field in nullable and err["type"] in ("literal_error", "float_type"):
            message = f"{message}, or null"
        errors.append({"row": row, "field": field, "message": message, "type": err["type"]})
    return errors
