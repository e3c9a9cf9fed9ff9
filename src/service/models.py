"""Request and response bodies. /predict's rows are not here: their type is built per model from
the schema and the trained categories (src/contract.py), and the fast path skips Pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from src.agent import DriftSummary, MetricPoint


class Prediction(BaseModel):
    probability: float = Field(ge=0, le=1)
    class_: int = Field(alias="class", ge=0, le=1)


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

    metrics: list[MetricPoint] | None = Field(default=None, min_length=1, max_length=100_000)
    drift: DriftSummary | None = None


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=128)
    row: int = Field(ge=0, le=1_000_000, description="Row index within that request")
    label: Literal[0, 1] = Field(description="1 when the true income is > 50K")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(min_length=1, max_length=100_000)


class FeedbackKey(BaseModel):
    request_id: str
    row: int


class FeedbackResponse(BaseModel):
    accepted: int
    unknown: list[FeedbackKey]
