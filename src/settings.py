"""Runtime settings, read from the environment with safe defaults (nothing happens at import)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Engine = Literal["lleaves", "booster", "pipeline"]


class Settings(BaseSettings):
    """Each field's environment variable is its alias (e.g. ARTIFACTS_DIR)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    # Set: serve this artifact folder, as it is (the registry is not read). Unset or empty (a
    # container cannot unset its image's ARTIFACTS_DIR): serve the registry's champion, and
    # follow it when it changes.
    artifacts_dir: Path | None = Field(None, alias="ARTIFACTS_DIR")
    # The registry lives beside the log: its tables in the log's database, its sets in this
    # folder (default: PREDICTION_LOG_DIR/registry; a shared folder for many replicas).
    registry_store_dir: Path | None = Field(None, alias="REGISTRY_STORE")
    model_poll_seconds: float = Field(5.0, gt=0, alias="MODEL_POLL_SECONDS")
    # Every move of an alias holds one lock; a mover waits this long for it, then is refused.
    registry_lock_wait_seconds: float = Field(60.0, ge=0, alias="REGISTRY_LOCK_WAIT_SECONDS")
    # Compile each version's trees when it is registered (off: the first worker to serve it
    # compiles them, and keeps them for the others).
    registry_compile: bool = Field(True, alias="REGISTRY_COMPILE")
    # The gate: a challenger's ROC-AUC may trail the champion's by this much on the same rows...
    gate_margin: float = Field(0.005, ge=0, alias="GATE_MARGIN")
    # ... judged on this many recent labelled rows of traffic at least, else on the holdout...
    gate_min_rows: int = Field(1000, ge=50, alias="GATE_MIN_ROWS")
    # ... and no fairness attribute's parity gap may widen by more than this.
    gate_max_gap_widening: float = Field(0.02, ge=0, alias="GATE_MAX_GAP_WIDENING")
    # Attribution drift: the monitoring job scores this many of the window's logged rows, and an
    # input whose share of the mean |contribution| moved by more than this is a finding.
    attribution_sample_rows: int = Field(2000, ge=100, le=100_000, alias="ATTRIBUTION_SAMPLE_ROWS")
    attribution_drift_share: float = Field(0.10, gt=0, lt=1, alias="ATTRIBUTION_DRIFT_SHARE")
    # The agent's retraining recipe: the training data plus this many hours of labelled traffic.
    retrain_traffic_hours: int = Field(24, ge=1, alias="RETRAIN_TRAFFIC_HOURS")
    # 0: the challenger keeps the champion's hyperparameters (a search costs ~20x the fit).
    retrain_trials: int = Field(0, ge=0, alias="RETRAIN_TRIALS")
    # The agent's guard: no second promotion or rollback within this many hours unless forced.
    agent_cooldown_hours: float = Field(6.0, ge=0, alias="AGENT_COOLDOWN_HOURS")
    # An incident already opened (paged) at least as grave within this many hours is not opened
    # (paged) again: each hourly plan of one incident is a new plan (Alertmanager's default
    # repeat_interval is 4 h).
    agent_alert_repeat_hours: float = Field(4.0, ge=0, alias="AGENT_ALERT_REPEAT_HOURS")
    # Where open_incident and page_oncall are sent (Alertmanager's webhook JSON); unset: stderr
    # and the registry's history only.
    alert_webhook_url: str | None = Field(None, alias="ALERT_WEBHOOK_URL")
    # POST /monitor may execute its plan only when this is on (and the token is sent).
    agent_execute_over_http: bool = Field(False, alias="AGENT_EXECUTE_OVER_HTTP")
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
    # waiting to ship plus those shipped and not yet written. 32 MiB holds about 270,000 batch
    # rows as columns (about 120 bytes each; they took 300 as JSON, when this was 64 MiB).
    prediction_log_buffer_bytes: int = Field(
        32 * 1024 * 1024, ge=1024 * 1024, alias="PREDICTION_LOG_BUFFER_BYTES"
    )
    # When the buffer is full: `backpressure` (the default: every decision on record), the
    # request's answer waits for room, at most PREDICTION_LOG_MAX_WAIT seconds, and only then are
    # its rows dropped (counted as backpressure_timeout); or `drop`: the rows are dropped at once
    # and counted (answers never wait; a service whose log may lose rows under load).
    prediction_log_policy: Literal["drop", "backpressure"] = Field(
        "backpressure", alias="PREDICTION_LOG_POLICY"
    )
    prediction_log_max_wait: float = Field(1.0, gt=0, le=60, alias="PREDICTION_LOG_MAX_WAIT")
    # The hourly statistics: an hour is final (its quality figures count) once this long has passed
    # since it ended, and gives a quality point only with this many labelled rows. At 500 labelled
    # rows the sampling noise of one hour's ROC-AUC is 1.3% (5th percentile: 2.3% below the true
    # value), under the 3% warn gate; at 200 it is 2.2% (3.5%). README: "Monitoring in SQL".
    stats_label_delay_hours: int = Field(24, ge=0, alias="STATS_LABEL_DELAY_HOURS")
    stats_min_labelled: int = Field(500, ge=1, alias="STATS_MIN_LABELLED")
    # Labels whose prediction is not (yet) in the log are kept this long, then purged.
    label_pending_hours: int = Field(168, ge=1, alias="LABEL_PENDING_HOURS")
    # Writing the truth (labels, and the registry's actions) needs this bearer token. Unset: off.
    service_token: SecretStr | None = Field(None, alias="SERVICE_TOKEN")
    # Where every process of one server run leaves its metrics for /metrics to add up. Unset: a
    # folder of the run's own under the system's temp folder.
    metrics_dir: str | None = Field(None, alias="METRICS_DIR")
    # Replays and backfills may stamp rows with X-Event-Time; off, clients cannot move the clock.
    accept_event_time: bool = Field(False, alias="ACCEPT_EVENT_TIME")
    # ... no further back than this (and at most 5 minutes ahead): 400 otherwise.
    event_time_max_age_days: int = Field(30, ge=1, alias="EVENT_TIME_MAX_AGE_DAYS")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_requests: bool = Field(True, alias="LOG_REQUESTS")

    @field_validator("artifacts_dir", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def registry_url(self) -> str:
        return self.prediction_log_url

    @property
    def registry_store(self) -> Path:
        return self.registry_store_dir or self.prediction_log_dir / "registry"

    @property
    def prediction_log_url(self) -> str:
        return self.database_url or f"sqlite:///{self.prediction_log_dir / 'predictions.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
