"""Versions, aliases and history: register a set, point an alias, roll back, read what happened."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from src.artifacts import (
    MANIFEST_FILE,
    METRICS_FILE,
    model_version,
    read_manifest,
    read_verified,
    write_artifact_set,
)
from src.errors import ArtifactError, DataError
from src.loop.tables import (
    make_engine,
    model_aliases_table,
    model_events_table,
    model_versions_table,
    upgrade,
)
from src.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
# What moves the champion; the cooldown counts these.
MOVES = ("promoted", "rolled_back", "forced")


@dataclass(frozen=True)
class Version:
    version: str
    registered_at: datetime
    source: str
    manifest: dict[str, Any]


class Registry:
    """The registry in one database, its sets in `store` (one folder per version)."""

    def __init__(self, engine: Engine, store: Path) -> None:
        self.engine = engine
        self.store = Path(store)

    # --- reading -----------------------------------------------------------------------------

    def folder(self, version: str) -> Path:
        return self.store / version

    def alias(self, name: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(
                select(model_aliases_table.c.version).where(model_aliases_table.c.alias == name)
            ).scalar()

    def champion_hyperparameters(self) -> dict[str, Any] | None:
        """The champion's trained hyperparameters (its metrics.json), or None without one."""
        champion = self.alias(CHAMPION)
        if champion is None:
            return None
        metrics = json.loads((self.folder(champion) / METRICS_FILE).read_text())
        return metrics["hyperparameters"]

    def get(self, version: str) -> Version:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(model_versions_table).where(model_versions_table.c.version == version)
            ).first()
        if row is None:
            raise DataError(f"no version {version!r} in the registry (python -m src.registry list)")
        return Version(row.version, row.registered_at, row.source, json.loads(row.manifest))

    def versions(self) -> list[Version]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(model_versions_table).order_by(model_versions_table.c.registered_at)
            ).all()
        return [Version(r.version, r.registered_at, r.source, json.loads(r.manifest)) for r in rows]

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        query = select(model_events_table).order_by(model_events_table.c.id.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            {**row, "ts": _iso(row["ts"]), "details": json.loads(row["details"] or "null")}
            for row in reversed(rows)
        ]

    def last_move(self) -> dict[str, Any] | None:
        moves = [e for e in self.history() if e["kind"] in MOVES]
        return moves[-1] if moves else None

    def previous_champion(self) -> str | None:
        """The champion before the current one, from the history."""
        current = self.alias(CHAMPION)
        for event in reversed(self.history()):
            if event["kind"] in (*MOVES, "champion") and event["version"] == current:
                return event["previous"]
        return None

    # --- writing -----------------------------------------------------------------------------

    def register(self, source: Path, *, actor: str) -> tuple[str, bool]:
        """Copy a verified set into the store; (its version, whether it is new). The same set
        again returns the existing version."""
        manifest = read_manifest(source)
        # Every file against its hash, now; the bytes checked are the bytes stored.
        blobs = {name: read_verified(source, name, manifest) for name in manifest["files"]}
        version = model_version(manifest)
        with self.engine.begin() as connection:
            if connection.execute(
                select(model_versions_table.c.version).where(
                    model_versions_table.c.version == version
                )
            ).first():
                return version, False
            if not (self.folder(version) / MANIFEST_FILE).is_file():
                write_artifact_set(self.folder(version), blobs, manifest)
            connection.execute(
                insert(model_versions_table).values(
                    version=version,
                    registered_at=datetime.now(UTC),
                    source=str(source.resolve())[:500],
                    manifest=json.dumps(manifest),
                )
            )
            record(connection, "registered", version, None, actor, f"registered from {source}")
        return version, True

    def set_alias(
        self,
        name: str,
        version: str,
        *,
        kind: str,
        actor: str,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> str | None:
        """Point `name` at `version`, recording the event; returns what it pointed at before."""
        self.get(version)
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            previous = connection.execute(
                select(model_aliases_table.c.version).where(model_aliases_table.c.alias == name)
            ).scalar()
            if previous is None:
                connection.execute(
                    insert(model_aliases_table).values(alias=name, version=version, updated_at=now)
                )
            else:
                connection.execute(
                    update(model_aliases_table)
                    .where(model_aliases_table.c.alias == name)
                    .values(version=version, updated_at=now)
                )
            record(connection, kind, version, previous, actor, reason, details)
        return previous

    def note(
        self, kind: str, version: str | None, *, actor: str, reason: str, details: Any = None
    ) -> None:
        """An event that moves nothing: a refusal, a failed load, an action the agent took."""
        with self.engine.begin() as connection:
            record(connection, kind, version, self.alias(CHAMPION), actor, reason, details)

    def cooling_down(self, hours: float, now: datetime) -> dict[str, Any] | None:
        """The last promotion or rollback, if it happened less than `hours` ago."""
        last = self.last_move()
        if last and now - datetime.fromisoformat(last["ts"]) < timedelta(hours=hours):
            return last
        return None


def record(
    connection: Connection,
    kind: str,
    version: str | None,
    previous: str | None,
    actor: str,
    reason: str,
    details: Any = None,
) -> None:
    connection.execute(
        insert(model_events_table).values(
            ts=datetime.now(UTC),
            kind=kind,
            version=version,
            previous=previous,
            actor=actor[:200],
            reason=reason,
            details=None if details is None else json.dumps(details, default=str),
        )
    )


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="seconds")
    return str(value)


def champion_folder(registry: Registry) -> tuple[str, Path]:
    version = registry.alias(CHAMPION)
    if version is None:
        raise ArtifactError(
            "the registry has no champion yet: train first "
            "(python -m src.train --data data/adult_synth.csv --outdir artifacts/)"
        )
    return version, registry.folder(version)


@contextmanager
def opened_registry(settings: Settings) -> Iterator[Registry]:
    """The registry beside the log (its tables brought up to date) for a command's duration."""
    engine = make_engine(settings.registry_url)
    try:
        upgrade(engine)
        yield Registry(engine, settings.registry_store)
    finally:
        engine.dispose()
