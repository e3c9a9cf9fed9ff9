"""Runtime settings, read from the environment with safe defaults (nothing happens at import)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Engine = Literal["lleaves", "booster", "pipeline"]


class Settings(BaseSettings):
    """Each field's environment variable is its alias (e.g. ARTIFACTS_DIR)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    artifacts_dir: Path = Field(Path("artifacts"), alias="ARTIFACTS_DIR")
    # lleaves: trees compiled to native code (fastest); booster: LightGBM's own predictor;
    # pipeline: pandas + the pickled scikit-learn pipeline per request (the reference path).
    predict_engine: Engine = Field("lleaves", alias="PREDICT_ENGINE")
    # At most 99,999: a prediction id holds the row in five digits.
    max_rows: int = Field(10_000, ge=1, le=99_999, alias="PREDICT_MAX_ROWS")
    # A 10,000-row request is about 3 MB of JSON; anything far beyond is refused unread.
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, alias="PREDICT_MAX_BODY_BYTES")
    # POST /monitor with an empty body judges these files.
    monitor_metrics_path: Path = Field(
        Path("data/metrics_history.jsonl"), alias="MONITOR_METRICS_PATH"
    )
    monitor_drift_path: Path = Field(Path("data/drift_latest.json"), alias="MONITOR_DRIFT_PATH")
    # Where the live loop's outputs land (src.monitor_window, the agent's plan): /report shows them.
    monitor_live_dir: Path = Field(Path("var/live"), alias="MONITOR_LIVE_DIR")
    monitor_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, alias="MONITOR_MAX_BODY_BYTES")
    # The prediction log: SQLite under PREDICTION_LOG_DIR unless DATABASE_URL names a database.
    log_predictions: bool = Field(True, alias="LOG_PREDICTIONS")
    database_url: str | None = Field(None, alias="DATABASE_URL")
    prediction_log_dir: Path = Field(Path("var"), alias="PREDICTION_LOG_DIR")
    log_sensitive_fields: bool = Field(True, alias="LOG_SENSITIVE_FIELDS")
    # What the log may hold in memory, per worker, before it drops (and counts) rows: requests
    # waiting to ship plus those shipped and not yet written.
    prediction_log_buffer_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, alias="PREDICTION_LOG_BUFFER_BYTES"
    )
    # Labels whose prediction is not (yet) in the log are kept this long, then purged.
    label_pending_hours: int = Field(168, ge=1, alias="LABEL_PENDING_HOURS")
    # Writing the truth (labels, and the registry's actions) needs this bearer token. Unset: off.
    service_token: SecretStr | None = Field(None, alias="SERVICE_TOKEN")
    # Where every process of one server run leaves its metrics for /metrics to add up. Unset: a
    # folder of the run's own under the system's temp folder.
    metrics_dir: str | None = Field(None, alias="METRICS_DIR")
    # Replays and backfills may stamp rows with X-Event-Time; off, clients cannot move the clock.
    accept_event_time: bool = Field(False, alias="ACCEPT_EVENT_TIME")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_requests: bool = Field(True, alias="LOG_REQUESTS")

    @property
    def prediction_log_url(self) -> str:
        return self.database_url or f"sqlite:///{self.prediction_log_dir / 'predictions.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
