"""What the agent observes: metrics points and a drift report, read strictly."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from src.errors import DataError

Rate = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]


class MetricPoint(BaseModel):
    """One monitoring point; `timestamp` is accepted for `ts`. Naive times are taken as UTC."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    # The schema states the years it takes: a time at the edge of the calendar (year 1 with a
    # positive offset) has no UTC equivalent, and is refused with a 400 that says so.
    ts: datetime = Field(
        validation_alias=AliasChoices("ts", "timestamp"),
        strict=False,
        json_schema_extra={"pattern": "^(19[7-9][0-9]|[2-8][0-9]{3})-"},
        description="ISO-8601 date-time, years 1970-8999; naive times are taken as UTC",
    )
    # null where the hour had no quality figure (too few labels, not final yet) or no traffic
    roc_auc: Rate | None
    pr_auc: Rate | None
    acc: Rate | None
    latency_p95_ms: Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=False)] | None
    error_rate: Rate | None
    model_version: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("ts", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # Only ISO-8601 text: a bare number would be read as seconds since 1970, silently.
        if not isinstance(value, str | datetime):
            raise ValueError("ts must be an ISO-8601 date-time string")
        return value

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # year 1 with a positive offset falls before datetime's range
            raise ValueError("ts is out of range once converted to UTC") from None


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer: 2000 and 2000.0 are the same number; true is not a number."""
    if isinstance(value, bool):
        raise ValueError("a count is an integer, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class AttributionDrift(BaseModel):
    """What the served model leans on now against training (src/loop/attributions.py)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    threshold: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    rows: Annotated[int, BeforeValidator(_whole_number)] = Field(ge=0)
    drifted: list[Annotated[str, Field(max_length=200)]] = Field(default=[], max_length=1000)
    columns: dict[
        Annotated[str, Field(max_length=200)],
        dict[str, Annotated[float, Field(allow_inf_nan=False)]],
    ] = Field(default={}, max_length=1000)


class DriftSummary(BaseModel):
    """The Part D drift report; extra keys (details, timestamps) are allowed and ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    overall_drift: bool
    threshold: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    features: dict[str, Annotated[float, Field(allow_inf_nan=False)] | None]
    # Drift of model inputs and of sensitive columns, where the report tells them apart (ours
    # do; the spec's shape has overall_drift only, which then stands for the inputs).
    model_input_drift: bool | None = None
    sensitive_drift: bool | None = None
    not_observed: list[Annotated[str, Field(max_length=64)]] = Field(default=[], max_length=100)

    @property
    def inputs_drifted(self) -> bool:
        return self.overall_drift if self.model_input_drift is None else self.model_input_drift

    # Attribution drift, when the monitoring job measured it.
    attribution_drift: AttributionDrift | None = None

    # Provenance, when the report carries it: when it was computed and over which window.
    timestamp: str | None = Field(default=None, max_length=64)
    window: dict[str, int | Annotated[str, Field(max_length=64)]] | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def parse_metrics_lines(lines: Sequence[str], *, source: str) -> list[MetricPoint]:
    """JSON lines -> points ordered by time. Blank lines are skipped; a bad line is a DataError
    naming `source` and the line number."""
    points = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            points.append(MetricPoint.model_validate_json(line))
        except ValidationError as exc:
            raise DataError(f"{source}:{number}: {_first_error(exc)}") from None
    if not points:
        raise DataError(f"{source}: no metrics points")
    return sorted(points, key=lambda p: p.ts)


def load_metrics(path: Path) -> list[MetricPoint]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_metrics_lines(text.splitlines(), source=str(path))


def load_drift(path: Path) -> DriftSummary:
    try:
        return DriftSummary.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except ValidationError as exc:
        raise DataError(f"{path}: not a drift report ({_first_error(exc)})") from None


# --- provenance: where each observation came from -----------------------------------------------


def file_origin(path: Path) -> dict[str, Any]:
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return {"from": "file", "path": str(path), "modified": modified}


def describe_metrics(points: Sequence[MetricPoint], origin: dict[str, Any]) -> dict[str, Any]:
    return {
        **origin,
        "points": len(points),
        "first_ts": points[0].ts.isoformat() if points else None,
        "last_ts": points[-1].ts.isoformat() if points else None,
    }


def describe_drift(drift: DriftSummary | None, origin: dict[str, Any]) -> dict[str, Any]:
    if drift is None:
        return {"from": "none", "note": "no drift report given: drift unknown"}
    out = {**origin}
    if drift.timestamp:
        out["computed"] = drift.timestamp
    if drift.window:
        out.update({f"window_{k}": v for k, v in drift.window.items()})
    return out
