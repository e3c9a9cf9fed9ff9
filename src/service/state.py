"""What the lifespan loads and the routes read: the verified model and the prediction log."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from src.dataset.spec import DatasetSpec
from src.errors import ArtifactError, RefusedError
from src.loop.columns import LogLayout, ensure_layout, log_layout
from src.loop.inserts import log_tables
from src.loop.tables import make_engine, upgrade
from src.loop.writer import PredictionLog
from src.model.artifacts import load_bundle
from src.model.compiled import FolderBuilds, build_key
from src.model.predictor import Predictor, TreeBuilds
from src.registry.core import CHAMPION, Registry, champion_folder
from src.service.observability import ServiceMetrics
from src.settings import Settings

logger = logging.getLogger("service")
REFUSED_RETRY_MAX = 300.0  # seconds: a refused champion is tried at least this often


@dataclass
class Refusal:
    """A champion this worker could not verify: why, and when it tries again."""

    reason: str
    since: datetime
    attempts: int = 1
    retry_at: float = 0.0  # time.monotonic()
    next_try_at: datetime | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "refused_since": self.since.isoformat(timespec="seconds"),
            "attempts": self.attempts,
            "next_try_at": self.next_try_at.isoformat(timespec="seconds")
            if self.next_try_at
            else None,
        }


class ModelState:
    """What is served: a verified predictor, or the reason there is none; the champion served
    before it, kept loaded so a rollback to it is one assignment; and the champions this worker
    could not verify, each retried with backoff."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.reason = "starting"
        self.previous: Predictor | None = None
        self.refused: dict[str, Refusal] = {}  # version -> why it is not served (yet)

    @property
    def not_loaded(self) -> str:
        return f"model not loaded: {self.reason}"


class StoreBuilds:
    """A version's compiled trees in the registry's store, their hash in its database
    (src/compiled.py)."""

    def __init__(self, registry: Registry, version: str) -> None:
        self.registry, self.version = registry, version

    @staticmethod
    def key() -> str:
        return build_key()

    def read(self) -> bytes | None:
        return self.registry.read_build(self.version, self.key())

    def keep(self, object_code: bytes) -> None:
        self.registry.keep_build(self.version, self.key(), object_code)


def verified_predictor(
    folder: Path, settings: Settings, builds: TreeBuilds | None = None
) -> tuple[Predictor, float]:
    """A predictor for the set in `folder`, checked: hashes, library versions, the 1e-9
    self-check, a warm-up. Raises on any failure."""
    bundle = load_bundle(folder)
    if builds is None and settings.predict_engine == "lleaves":
        builds = FolderBuilds(folder, bundle.version)  # ARTIFACTS_DIR: kept in the folder
    try:
        predictor = Predictor(
            bundle, engine=settings.predict_engine, max_rows=settings.max_rows, builds=builds
        )
    except ImportError as exc:  # lleaves/llvmlite unusable here: serve the same model slower
        logger.warning("lleaves unavailable (%s); serving with LightGBM's booster", exc)
        predictor = Predictor(bundle, engine="booster", max_rows=settings.max_rows)
    difference = predictor.self_check()
    predictor.predict_rows(predictor.adapter.validate_python(bundle.sample["rows"][:8]))  # warm
    return predictor, difference


def load_predictor(settings: Settings, registry: Registry | None = None) -> ModelState:
    """The model to serve: ARTIFACTS_DIR when set, else the registry's champion. Any failure
    leaves no model and says why; the process stays up (and retries a champion with backoff)."""
    state = ModelState()
    champion = None
    try:
        if settings.artifacts_dir is not None:
            folder, builds = settings.artifacts_dir, None
        else:
            registry = registry or open_registry(settings)
            champion, folder = champion_folder(registry)
            builds = StoreBuilds(registry, champion)
        predictor, difference = verified_predictor(folder, settings, builds)
    except Exception as exc:  # any failure to load is a failure to verify: never served
        state.reason = _why(exc)
        logger.error("model not loaded: %s", state.reason)
        if champion is not None:
            _refuse(state, champion, state.reason, settings.model_poll_seconds)
        return state
    state.predictor, state.reason = predictor, "ready"
    logger.info(
        "model loaded",
        extra={
            "fields": {
                "model_version": predictor.version,
                "engine": predictor.engine,
                "self_check_max_difference": difference,
            }
        },
    )
    return state


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {exc}"[:500]


def _refuse(state: ModelState, version: str, reason: str, poll_seconds: float) -> Refusal:
    """Record a refusal; the next try waits the poll interval, doubling to REFUSED_RETRY_MAX."""
    refusal = state.refused.get(version)
    now = datetime.now(UTC)
    if refusal is None:
        refusal = state.refused[version] = Refusal(reason, now, attempts=0)
    refusal.reason = reason
    refusal.attempts += 1
    delay = min(poll_seconds * 2 ** (refusal.attempts - 1), max(poll_seconds, REFUSED_RETRY_MAX))
    refusal.retry_at = time.monotonic() + delay
    refusal.next_try_at = now + timedelta(seconds=delay)
    return refusal


def open_registry(settings: Settings) -> Registry:
    return Registry(make_engine(settings.registry_url), settings.registry_store)


async def follow_champion(app_state: Any, *, now: bool = False) -> None:
    """Serve the registry's champion: when its alias moves, load and verify the new version off
    the request path, then swap. Requests in flight finish on the model they started with; a
    version that fails verification is never served (the old one stays, /ready and the
    registry's history say why) and is tried again with backoff, at once when `now`."""
    registry: Registry = app_state.registry
    current: ModelState = app_state.model
    champion = await asyncio.to_thread(registry.alias, CHAMPION)
    loaded = current.predictor.version if current.predictor else None
    if champion is None or champion == loaded:
        return
    started = time.perf_counter()
    previous = current.previous
    if previous is not None and previous.version == champion:  # a rollback: already loaded
        _swap(app_state, current, previous, started)
        return
    refusal = current.refused.get(champion)
    if refusal is not None and not now and time.monotonic() < refusal.retry_at:
        return
    settings: Settings = app_state.settings
    try:
        predictor, _ = await asyncio.to_thread(
            verified_predictor,
            registry.folder(champion),
            settings,
            StoreBuilds(registry, champion),
        )
        await asyncio.to_thread(_log_for, app_state, predictor)
    except Exception as exc:
        refusal = _refuse(current, champion, _why(exc), settings.model_poll_seconds)
        logger.error("champion %s not served: %s", champion, refusal.reason)
        if refusal.attempts == 1:  # the history says it once per worker, not every retry
            await asyncio.to_thread(
                registry.note,
                "refused_to_serve",
                champion,
                actor=f"service pid {os.getpid()}",
                reason=refusal.reason,
            )
        return
    _swap(app_state, current, predictor, started)


def _log_for(app_state: Any, predictor: Predictor) -> None:
    """The log ready for the model about to be served: its spec's new columns added (recorded),
    the writer switched to them; a model of another dataset refused (RefusedError)."""
    log: PredictionLog | None = app_state.prediction_log
    if log is None:
        return
    log.use_tables(log_tables(ensure_layout(log.engine, predictor.spec)))


def _swap(app_state: Any, current: ModelState, predictor: Predictor, started: float) -> None:
    swapped = ModelState()
    swapped.predictor, swapped.reason = predictor, "ready"
    swapped.previous = current.predictor  # kept loaded: a rollback to it is immediate
    swapped.refused = {v: r for v, r in current.refused.items() if v != predictor.version}
    app_state.model = swapped  # one assignment: a request reads it once, at its start
    loaded = current.predictor.version if current.predictor else None
    del current
    # Startup froze the first model out of the collector's sight; let what is no longer served
    # be collected (a swap is rare), then freeze again what serving keeps.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    fields = {
        "from": loaded,
        "to": predictor.version,
        "pid": os.getpid(),
        "seconds": round(time.perf_counter() - started, 3),  # noticed -> serving
    }
    logger.info("model swapped", extra={"fields": fields})


def ledger_dir(settings: Settings) -> Path:
    """Where this server's workers keep their ledgers (src.loop.progress): beside the log, one
    folder per database, shared by every server of this machine that logs into it."""
    url = settings.prediction_log_url.encode()
    return settings.prediction_log_dir / "ledgers" / hashlib.sha256(url).hexdigest()[:16]


def open_prediction_log(
    settings: Settings, metrics: ServiceMetrics, metrics_dir: Path, spec: DatasetSpec | None
) -> tuple[PredictionLog | None, str]:
    """The started log (its columns the served spec's: src/loop/columns.py) and its status line
    for /ready; a database that cannot be reached turns logging off (said in /ready and the
    log), it never stops the service from serving. A log of another dataset raises
    RefusedError: the caller refuses the model."""
    if not settings.log_predictions:
        return None, "off"
    url = settings.prediction_log_url
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url)
        try:
            tables = log_tables(_layout(engine, spec))
        finally:
            engine.dispose()
        log = PredictionLog(
            url,
            tables=tables,
            buffer_bytes=settings.prediction_log_buffer_bytes,
            log_sensitive=settings.log_sensitive_fields,
            metrics_dir=str(metrics_dir),
            on_drop=metrics.drop,
            policy=settings.prediction_log_policy,
            max_wait=settings.prediction_log_max_wait,
            ledger_dir=ledger_dir(settings),
        ).start()
    except RefusedError:
        raise
    except Exception as exc:  # unreachable database, bad URL, permissions: serve without the log
        logger.error("prediction log unavailable: %s", exc)
        return None, f"unavailable: {type(exc).__name__}: {exc}"[:300]
    return log, "up"


def _layout(engine: Any, spec: DatasetSpec | None) -> LogLayout:
    """The log's layout for the served spec; with no model loaded, the log as it is (labels
    can still be taken)."""
    if spec is not None:
        return ensure_layout(engine, spec)
    upgrade(engine)
    return log_layout(engine) or LogLayout("", "", "", (), (), ())


def log_status(app_state: Any) -> dict[str, Any]:
    """The prediction log as /ready shows it: its database and its real state right now."""
    log: PredictionLog | None = app_state.prediction_log
    if log is None:
        return {"state": app_state.prediction_log_status}
    return {
        "backend": log.engine.dialect.name,
        "state": log.state,
        "buffered_bytes": log.buffered_bytes,
        "dropped_rows": log.dropped_rows,
        "policy": log.policy,
        "waited_requests": log.waited_requests,
        "writer_restarts": log.restarts,
    }


async def tend(app_state: Any, seconds: float, export_every: int = 10) -> None:
    """Every `seconds`: ship the log's pending requests to its writer, restart a writer that
    died; every `export_every` ticks, publish this worker's metrics for /metrics to add up;
    every MODEL_POLL_SECONDS (or at once when asked), follow the registry's champion."""
    poll_every = max(1, round(app_state.settings.model_poll_seconds / seconds))
    following: asyncio.Task[None] | None = None
    saving: asyncio.Task[None] | None = None
    for tick in itertools.count():
        await asyncio.sleep(seconds)
        log: PredictionLog | None = app_state.prediction_log
        if log is not None:
            log.ship()
            log.wake_waiters()
            log.check()
            if tick % (2 * export_every) == 0 and (saving is None or saving.done()):
                # Drop counts to the database (a write: in a thread, never on this loop).
                saving = asyncio.create_task(asyncio.to_thread(log.save_drops))
        if tick % export_every == 0:
            publish(app_state)
        reload: asyncio.Event = app_state.reload
        busy = following is not None and not following.done()
        if (
            app_state.registry is not None
            and not busy
            and (tick % poll_every == 0 or reload.is_set())
        ):
            asked = reload.is_set()
            reload.clear()
            # Its own task: loading a model takes seconds, shipping the log must not wait.
            following = asyncio.create_task(_follow(app_state, now=asked))


async def _follow(app_state: Any, *, now: bool) -> None:
    try:
        await follow_champion(app_state, now=now)
    except Exception:  # a registry that cannot be read now: serve on, try again later
        logger.exception("could not read the registry's champion")


def publish(app_state: Any) -> None:
    metrics: ServiceMetrics = app_state.metrics
    log: PredictionLog | None = app_state.prediction_log
    metrics.model_ready.set(app_state.model.predictor is not None)
    metrics.log_up.set(log is not None and log.state == "up")
    metrics.log_buffered.set(log.buffered_bytes if log is not None else 0)
    metrics.log_unwritten.set(log.unwritten_seconds() if log is not None else 0)
    metrics.export()


# Dependencies are async on purpose: FastAPI runs sync ones in a thread pool, which costs more
# than a whole single-row prediction. /predict uses none at all (see routes/predict.py).
async def get_state(request: Request) -> ModelState:
    return request.app.state.model


async def get_predictor(state: Annotated[ModelState, Depends(get_state)]) -> Predictor:
    if state.predictor is None:
        raise HTTPException(status_code=503, detail=state.not_loaded)
    return state.predictor
