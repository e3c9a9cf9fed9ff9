"""Versions, aliases and history: register a set, move an alias (compare-and-swap, under one lock
for every mover), read the champions' stack, keep the holdout and the compiled trees."""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from src.errors import ArtifactError, DataError, RefusedError
from src.fileio import write_bytes_atomic
from src.loop.columns import ensure_layout
from src.loop.tables import (
    make_engine,
    model_aliases_table,
    model_builds_table,
    model_events_table,
    model_versions_table,
    registry_holdout_table,
    upgrade,
)
from src.model.artifacts import (
    HOLDOUT_ROWS_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    identity_digest,
    model_version,
    read_manifest,
    read_verified,
    write_artifact_set,
)
from src.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
# What moves the champion; the cooldown counts these.
MOVES = ("promoted", "rolled_back", "forced")
# Every event that makes a version champion: the first one, then the moves.
CHAMPION_EVENTS = ("champion", *MOVES)
BUILDS_FOLDER = ".builds"  # beside a version's files; not part of the set or its version
# Any constant works; it names the registry's move lock among PostgreSQL's advisory locks.
_MOVE_LOCK = 0x5ADC0E0


class MoveConflictError(RefusedError):
    """Another move came first: the alias no longer points where this move expected."""

    def __init__(self, alias: str, expected: str | None, found: str | None) -> None:
        super().__init__(
            f"the {alias} moved to {found} while this move expected {expected}: another move "
            "came first"
        )
        self.found = found


@dataclass(frozen=True)
class Version:
    version: str
    registered_at: datetime
    source: str
    manifest: dict[str, Any]


@dataclass
class ChampionStack:
    """The champions in the order they were made champion, the current one last. A rollback pops
    the current one (and marks it: it is never a rollback target again until it is promoted
    anew) and any broken ones it skipped."""

    versions: list[str] = field(default_factory=list)
    rolled_back_from: set[str] = field(default_factory=set)

    @classmethod
    def replay(cls, events: list[dict[str, Any]]) -> ChampionStack:
        stack = cls()
        for event in events:
            if event["kind"] not in CHAMPION_EVENTS:
                continue
            version = event["version"]
            if is_rollback(event):
                if stack.versions:
                    stack.rolled_back_from.add(stack.versions.pop())
                while stack.versions and stack.versions[-1] != version:
                    stack.versions.pop()  # a broken champion the rollback skipped
                if not stack.versions:
                    stack.versions.append(version)
            elif not stack.versions or stack.versions[-1] != version:
                stack.rolled_back_from.discard(version)
                stack.versions.append(version)
        return stack

    def candidates(self) -> list[str]:
        """Where a rollback may go, best first: earlier champions, newest first, never one that
        was rolled back from, never the current one."""
        current = self.versions[-1] if self.versions else None
        seen: set[str] = set()
        out = []
        for version in reversed(self.versions[:-1]):
            if version in self.rolled_back_from or version == current or version in seen:
                continue
            seen.add(version)
            out.append(version)
        return out


def is_rollback(event: dict[str, Any]) -> bool:
    # Histories from before rollbacks had a kind of their own recorded a forced one as "forced".
    return event["kind"] == "rolled_back" or (
        event["kind"] == "forced" and str(event["reason"]).startswith("rolled back from")
    )


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
            return _alias(connection, name)

    def champion_hyperparameters(self) -> dict[str, Any] | None:
        """The champion's trained hyperparameters (its metrics.json), or None without one."""
        champion = self.alias(CHAMPION)
        if champion is None:
            return None
        metrics = json.loads((self.folder(champion) / METRICS_FILE).read_text())
        return metrics["hyperparameters"]

    def champion_spec(self) -> Any:
        """The champion's dataset spec (the Adult census spec without a champion, or for a set
        from before specs)."""
        from src.dataset.spec import adult_spec, parse_spec
        from src.model.artifacts import SPEC_FILE

        champion = self.alias(CHAMPION)
        path = self.folder(champion) / SPEC_FILE if champion else None
        if path is None or not path.is_file():
            return adult_spec()
        return parse_spec(path.read_text(), str(path))

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

    def history(
        self,
        limit: int | None = None,
        kinds: tuple[str, ...] | None = None,
        details_contain: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events oldest first (the newest `limit` of them; only `kinds`, only those whose
        details hold `details_contain`, when given)."""
        events = model_events_table
        query = select(events).order_by(events.c.id.desc())
        if kinds:
            query = query.where(events.c.kind.in_(kinds))
        if details_contain:
            query = query.where(events.c.details.contains(details_contain, autoescape=True))
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            {**row, "ts": _iso(row["ts"]), "details": json.loads(row["details"] or "null")}
            for row in reversed(rows)
        ]

    def champion_stack(self) -> ChampionStack:
        return ChampionStack.replay(self.history(kinds=CHAMPION_EVENTS))

    def last_move(self) -> dict[str, Any] | None:
        moves = self.history(limit=1, kinds=MOVES)
        return moves[-1] if moves else None

    def cooling_down(self, hours: float, now: datetime) -> dict[str, Any] | None:
        """The last promotion or rollback, if it happened less than `hours` ago."""
        last = self.last_move()
        if last and now - datetime.fromisoformat(last["ts"]) < timedelta(hours=hours):
            return last
        return None

    # --- writing -----------------------------------------------------------------------------

    def register(self, source: Path, *, actor: str) -> tuple[str, bool]:
        """Copy a verified set into the store; (its version, whether it is new). The same set
        again returns the existing version. The first set that carries a holdout gives the
        registry its holdout."""
        manifest = read_manifest(source)
        # Every file against its hash, now; the bytes checked are the bytes stored.
        blobs = {name: read_verified(source, name, manifest) for name in manifest["files"]}
        if "identity" in manifest:  # the version is computed from the bytes, not taken on trust
            identity = {name: identity_digest(name, data) for name, data in blobs.items()}
            if identity != manifest["identity"]:
                raise ArtifactError(f"{source}: the manifest's identity does not match its files")
        version = model_version(manifest)
        # The registry lives in the log's database, which belongs to one dataset: a set of
        # another is refused here, and a spec's new columns are added (src/loop/columns.py).
        ensure_layout(self.engine, spec_of(blobs, source))
        with self.engine.begin() as connection:
            known = connection.execute(
                select(model_versions_table.c.version).where(
                    model_versions_table.c.version == version
                )
            ).first()
            if not known:
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
        self.adopt_holdout(version, manifest, blobs.get(HOLDOUT_ROWS_FILE), actor=actor)
        return version, not known

    def move(
        self,
        name: str,
        version: str,
        *,
        expected: str | None,
        kind: str,
        actor: str,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Point `name` at `version` only if it still points at `expected` (None: nowhere yet),
        recording the event in the same transaction. Raises MoveConflictError if another move came
        first: the database, not this process's memory, decides."""
        self.get(version)
        now = datetime.now(UTC)
        aliases = model_aliases_table
        try:
            with self.engine.begin() as connection:
                if expected is None:
                    connection.execute(
                        insert(aliases).values(alias=name, version=version, updated_at=now)
                    )
                else:
                    moved = connection.execute(
                        update(aliases)
                        .where(aliases.c.alias == name, aliases.c.version == expected)
                        .values(version=version, updated_at=now)
                    ).rowcount
                    if moved != 1:
                        raise MoveConflictError(name, expected, _alias(connection, name))
                record(connection, kind, version, expected, actor, reason, details)
        except IntegrityError:  # the alias was created by another move first
            raise MoveConflictError(name, expected, self.alias(name)) from None

    def note(
        self, kind: str, version: str | None, *, actor: str, reason: str, details: Any = None
    ) -> None:
        """An event that moves nothing: a refusal, a failed load, an action the agent took."""
        with self.engine.begin() as connection:
            previous = _alias(connection, CHAMPION)
            record(connection, kind, version, previous, actor, reason, details)

    @contextmanager
    def moves_locked(self, wait_seconds: float) -> Iterator[None]:
        """Every mover (CLI, agent, training) holds this while it reads the champion, gates and
        moves: PostgreSQL's advisory lock, or a file lock beside SQLite. Refused after
        `wait_seconds` of waiting."""
        deadline = time.monotonic() + wait_seconds
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                lock = text("SELECT pg_try_advisory_lock(:k)")
                while not connection.execute(lock, {"k": _MOVE_LOCK}).scalar():
                    _wait_or_refuse(deadline, wait_seconds)
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MOVE_LOCK})
                    connection.commit()
            return
        database = self.engine.url.database
        path = Path(f"{database}.moves.lock") if database else self.store / ".moves.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    _wait_or_refuse(deadline, wait_seconds)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- the holdout -------------------------------------------------------------------------

    def holdout(self) -> dict[str, Any] | None:
        """The registry's holdout record (rule, sha256, rows, file), or None before one."""
        with self.engine.connect() as connection:
            row = connection.execute(select(registry_holdout_table)).mappings().first()
        return dict(row) if row else None

    def adopt_holdout(
        self, version: str, manifest: dict[str, Any], rows: bytes | None, *, actor: str
    ) -> None:
        """Carve once: the first set that left a holdout out gives the registry its holdout."""
        block = manifest.get("holdout")
        if rows is None or not block or self.holdout() is not None:
            return
        digest = hashlib.sha256(rows).hexdigest()
        name = f"holdout-{digest[:16]}.csv"
        write_bytes_atomic(self.store / name, rows)
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(registry_holdout_table).values(
                        id=1,
                        rule=block["rule"],
                        sha256=digest,
                        rows=block["rows_excluded"],
                        file=name,
                        carved_from=version,
                        carved_at=datetime.now(UTC),
                    )
                )
                reason = f"the holdout: {block['rows_excluded']} rows, {block['rule']}"
                record(connection, "holdout", version, None, actor, reason, {"sha256": digest})
        except IntegrityError:  # another process adopted one first: theirs stands
            return

    def holdout_path(self) -> Path:
        """The holdout's rows file, checked against the hash recorded when it was carved."""
        record_ = self.holdout()
        if record_ is None:
            raise ArtifactError("the registry has no holdout yet")
        path = self.store / record_["file"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read the holdout ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != record_["sha256"]:
            raise ArtifactError(f"{path}: the holdout does not match its recorded sha256")
        return path

    # --- compiled trees ----------------------------------------------------------------------

    def read_build(self, version: str, key: str) -> bytes | None:
        """A version's compiled trees for this build key, if built and intact; else None."""
        with self.engine.connect() as connection:
            digest = connection.execute(
                select(model_builds_table.c.sha256).where(
                    model_builds_table.c.version == version,
                    model_builds_table.c.build_key == key,
                )
            ).scalar()
        path = self.folder(version) / BUILDS_FOLDER / f"{key}.o"
        if digest is None or not path.is_file():
            return None
        data = path.read_bytes()
        return data if hashlib.sha256(data).hexdigest() == digest else None

    def keep_build(self, version: str, key: str, data: bytes) -> None:
        write_bytes_atomic(self.folder(version) / BUILDS_FOLDER / f"{key}.o", data)
        digest = hashlib.sha256(data).hexdigest()
        table = model_builds_table
        with self.engine.begin() as connection:
            connection.execute(
                table.delete().where(table.c.version == version, table.c.build_key == key)
            )
            connection.execute(
                insert(table).values(
                    version=version, build_key=key, sha256=digest, built_at=datetime.now(UTC)
                )
            )


def spec_of(blobs: dict[str, bytes], source: Path) -> Any:
    """A set's dataset spec, from its files (a set from before specs: the census's)."""
    from src.dataset.spec import adult_spec, parse_spec
    from src.model.artifacts import SPEC_FILE

    if SPEC_FILE not in blobs:
        return adult_spec()
    return parse_spec(blobs[SPEC_FILE].decode(), str(source / SPEC_FILE))


def _wait_or_refuse(deadline: float, wait_seconds: float) -> None:
    if time.monotonic() > deadline:
        raise RefusedError(
            f"another move holds the registry's lock (waited {wait_seconds:.0f} s); "
            "python -m src.registry history shows what is moving"
        )
    time.sleep(0.1)


def _alias(connection: Connection, name: str) -> str | None:
    return connection.execute(
        select(model_aliases_table.c.version).where(model_aliases_table.c.alias == name)
    ).scalar()


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
        what = "train first (python -m src.train --data data/adult_synth.csv --outdir artifacts/)"
        if Path("artifacts", MANIFEST_FILE).is_file():
            what = "artifacts/ holds a trained set: python -m src.registry register artifacts"
        raise ArtifactError(f"the registry in {registry.store} has no champion yet: {what}")
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
