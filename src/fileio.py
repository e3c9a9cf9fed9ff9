"""Small file helpers shared by the CLIs: hashing, atomic writes, one-line errors at the edge."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.errors import ArtifactError, DataError, RefusedError, UnreachableError


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write a temporary file beside `path`, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    # allow_nan=False: a NaN would be invalid JSON for most consumers; better to fail loudly here.
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def _database_unreachable(exc: BaseException) -> bool:
    """SQLAlchemy's errors for a database that does not answer (checked by name: the CLIs that
    never touch a database do not import SQLAlchemy)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return type(exc).__module__.startswith("sqlalchemy") and bool(
        names & {"OperationalError", "InterfaceError"}
    )


def run_cli(body: Callable[[], int]) -> int:
    """Run a CLI body; turn the project's errors into one line on stderr and the exit code every
    CLI shares: 1 refused, 2 bad input (a file, an artifact set), 3 a dependency unreachable."""
    try:
        return body()
    except RefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except (DataError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnreachableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:
        if not _database_unreachable(exc):
            raise
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(
            f"error: the database did not answer ({reason[0] if reason else type(exc).__name__})"
            "; check DATABASE_URL (or PREDICTION_LOG_DIR) and that the server is up",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
