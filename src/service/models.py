"""Request and response bodies. /predict's rows are not here: their type is built per model from
the schema and the trained categories (src/contract.py), and the fast path skips Pydantic."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from src.agent import DriftSummary, MetricPoint

MAX_POINTS = 50_000


class Reason(BaseModel):
    column: str = Field(description="A model input, in the dataset spec's own name")
    value: Any = Field(description="The row's value, as sent")
    contribution: float = Field(description="Its exact contribution to the score, in log-odds")


class Prediction(BaseModel):
    prediction_id: str = Field(description="Issued by the server; send it back with the label")
    probability: float = Field(ge=0, le=1)
    class_: int = Field(alias="class", ge=0, le=1)
    base_value: float | None = Field(
        default=None,
        description="With ?reasons=K: the score of an average row, in log-odds; it plus every "
        "input's contribution is the row's score (the log-odds of `probability`)",
    )
    reasons: list[Reason] | None = Field(
        default=None,
        description="With ?reasons=K: the K largest contributions by absolute size (TreeSHAP)",
    )


class PredictResponse(BaseModel):
    model_version: str
    threshold: float
    predictions: list[Prediction]


class RowError(BaseModel):
    row: int | None
    field: str | None
    message: str
    type: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[RowError] = []


class MonitorRequest(BaseModel):
    """Observations to judge; what is left out comes from the configured default files."""

    model_config = ConfigDict(extra="forbid")

    # Measured: 100,000 falling points took 1.24 s to judge and 0.66 s to parse on a 2-core
    # machine; 50,000 stay under 1 s together (README: "The monitoring agent").
    metrics: list[MetricPoint] | None = Field(default=None, min_length=1, max_length=MAX_POINTS)
    drift: DriftSummary | None = None
    execute: StrictBool = Field(
        default=False,
        description="Carry out the plan (needs AGENT_EXECUTE_OVER_HTTP=true and the token)",
    )


def _json_integer(value: object) -> object:
    """JSON Schema's integer: 1 and 1.0 are the same number, true is not a number at all."""
    if isinstance(value, bool):
        raise ValueError("a label is the integer 0 or 1, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        min_length=1, max_length=64, description="The prediction_id /predict returned"
    )
    label: int = Field(
        strict=True, ge=0, le=1, description="1 when the true outcome is the positive class"
    )

    _integer = field_validator("label", mode="before")(_json_integer)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(min_length=1, max_length=100_000)


class InvalidLabel(BaseModel):
    prediction_id: str
    reason: str


class FeedbackResponse(BaseModel):
    stored: int = Field(description="Labels written now (new, or corrections)")
    repeated: int = Field(description="Labels equal to the latest one already held: nothing to do")
    corrections: int = Field(description="Labels that changed an earlier label (both are kept)")
    matched: int = Field(description="Labels whose prediction is in the log")
    pending: list[str] = Field(description="Ids whose prediction is not in the log yet")
    pending_kept_until: str = Field(description="Pending labels are purged after this time")
    invalid: list[InvalidLabel] = Field(description="Ids this service could never have issued")
