"""Shared helpers for the benchmarks: tools, servers on free loopback ports, CPU accounting."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ensure_tools(*names: str) -> None:
    """Install missing Debian packages (wrk, hey) when running as root; fail clearly otherwise."""
    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"bench needs {', '.join(missing)} (apt-get install {' '.join(missing)})")
    print(f"installing {', '.join(missing)} ...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=False, capture_output=True)
    if any(shutil.which(n) is None for n in missing):
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing], check=True, capture_output=True
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Uvicorn:
    """One uvicorn worker on a free 127.0.0.1 port, its log in a file. `cwd` may be another
    checkout of the project: the same benchmark then measures that version side by side."""

    def __init__(
        self,
        app: str,
        log: Path,
        ready_path: str,
        *,
        cwd: Path = ROOT,
        workers: int = 1,
        **env: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
                *(["--workers", str(workers)] if workers > 1 else []),
            ],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{app} exited; see {log}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{app} did not become ready; see {log}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn's workers, their log writers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def _tree_sum(pid: int, measure: Any) -> float:
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            total += measure(member)
    return total


def tree_cpu_seconds(pid: int) -> float:
    return _tree_sum(pid, cpu_seconds)


def tree_rss_mib(pid: int) -> float:
    return _tree_sum(pid, rss_mib)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def wrk_script(work: Path, name: str, body: bytes) -> Path:
    """A wrk Lua script that POSTs `body` as JSON (the body kept in a file beside it)."""
    data = work / f"{name}.json"
    data.write_bytes(body)
    script = work / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{data}"); wrk.body = f:read("*a"); f:close()\n'
    )
    return script


def census(path: str | Path, **options: Any) -> Any:
    """A census table read by the Adult spec (the benches measure the default dataset)."""
    from src.dataset.spec import adult_spec
    from src.dataset.table import load_dataset

    return load_dataset(path, adult_spec(), **options)


def census_features() -> tuple[str, ...]:
    from src.dataset.spec import adult_spec

    return adult_spec().features


def census_tables(engine: Any) -> Any:
    """The log's tables for census rows (the log claimed for the census, as serving does)."""
    from src.dataset.spec import adult_spec
    from src.loop.columns import ensure_layout
    from src.loop.inserts import log_tables

    return log_tables(ensure_layout(engine, adult_spec()))
