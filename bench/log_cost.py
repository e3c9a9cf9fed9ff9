"""What the prediction log costs the service, log on against log off, in the same run.

One uvicorn worker, wrk on the same 2 cores, servers started side by side: the log off, the log on
into SQLite (the default), the log on into PostgreSQL. Rounds alternate the servers, so a noisy
neighbour hurts each alike; each figure is the median of the rounds, and the spread is printed.

- 1,000-row requests at c=1, as fast as the service answers: req/s, p50, rows dropped (counted, from
  /metrics) and whether rows in the database plus drops equal the rows answered;
- single rows at c=16: req/s;
- peak RSS of the whole process tree (worker, writer, multiprocessing's helper).

Goals (issue 25): 1,000-row throughput with the log on >= 75% of log off; 0 rows dropped at that
full load; single rows at c=16 >= 90%; peak RSS within 100 MB of log off.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.common import Uvicorn, median, process_tree, rss_mib, table
from bench.log_capacity import fresh_postgres
from bench.workers import _script
from src.data import load_dataset
from src.loop.tables import make_engine
from src.schema import FEATURES

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3
SECONDS = 10
GOALS = {"batch_ratio": 0.75, "single_ratio": 0.90, "rss_mb": 100.0}


def _wrk(url: str, script: Path, *, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)] if p50 else 0.0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": round(float(p50.group(1)) * scale, 2) if p50 else float("nan"),
    }


def _metric(url: str, prefix: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def _buffered(url: str) -> int:
    with urllib.request.urlopen(f"{url}/ready", timeout=10) as response:
        return json.loads(response.read())["prediction_log"].get("buffered_bytes", 0)


def _logged_rows(url: str) -> int:
    from sqlalchemy import text

    engine = make_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM predictions")).scalar_one()
    engine.dispose()
    return count


class _PeakRss:
    """Peak RSS of a process tree (sum over its members), sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            total = 0.0
            for member in process_tree(self.pid):
                try:
                    total += rss_mib(member)
                except OSError:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak * 1.048576  # MiB -> MB, as the goal is stated


def _settle(server: Uvicorn, log_url: str | None) -> None:
    deadline = time.monotonic() + 120
    while log_url and _buffered(server.url) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def measure(
    server: Uvicorn, log_url: str | None, batch: Path, single: Path, seconds: int
) -> dict[str, Any]:
    """One round against one server: 1,000-row requests at c=1, then single rows at c=16."""
    url = server.url + "/predict"
    _wrk(url, batch, connections=1, seconds=1)  # warm-up
    _settle(server, log_url)
    dropped_before = _metric(server.url, "prediction_log_dropped_rows_total")
    logged_before = _logged_rows(log_url) if log_url else 0
    batch_run = _wrk(url, batch, connections=1, seconds=seconds)
    _settle(server, log_url)
    dropped = _metric(server.url, "prediction_log_dropped_rows_total") - dropped_before
    logged = (_logged_rows(log_url) - logged_before) if log_url else 0
    answered = batch_run["requests"] * 1000
    single_run = _wrk(url, single, connections=16, seconds=seconds)
    _settle(server, log_url)
    return {
        "batch_rps": batch_run["rps"],
        "batch_p50_ms": batch_run["p50_ms"],
        "rows_answered": answered,
        "rows_logged": logged,
        "rows_dropped": dropped,
        "every_row_accounted": (logged + dropped == answered) if log_url else None,
        "single_c16_rps": single_run["rps"],
    }


def run(artifacts: Path, *, rounds: int = ROUNDS, seconds: int = SECONDS) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-log-cost-"))
    frame = load_dataset(ROOT / "data" / "adult_synth.csv").features
    batch = _script(
        work, "batch", frame.head(1000)[list(FEATURES)].to_json(orient="records").encode()
    )
    single = _script(
        work, "single", frame.head(1)[list(FEATURES)].to_json(orient="records").encode()
    )
    logs = {
        "log off": None,
        "SQLite": f"sqlite:///{work / 'log.db'}",
        "PostgreSQL": fresh_postgres(),
    }
    servers: dict[str, tuple[Uvicorn, _PeakRss]] = {}
    results: dict[str, list[dict[str, Any]]] = {
        name: [] for name, url in logs.items() if url or name == "log off"
    }
    try:
        for name in results:
            env = {"ARTIFACTS_DIR": str(artifacts), "LOG_REQUESTS": "false"}
            url = logs[name]
            env.update({"DATABASE_URL": url} if url else {"LOG_PREDICTIONS": "false"})
            server = Uvicorn("src.app:app", work / f"{uuid.uuid4().hex[:6]}.log", "/ready", **env)
            servers[name] = (server, _PeakRss(server.pid))
        for _ in range(rounds):
            for name in results:
                results[name].append(measure(servers[name][0], logs[name], batch, single, seconds))
    finally:
        peaks = {name: rss.stop() for name, (_, rss) in servers.items()}
        for server, _ in servers.values():
            server.stop()
    return summary(results, peaks)


def summary(results: dict[str, list[dict[str, Any]]], peaks: dict[str, float]) -> dict[str, Any]:
    off = results["log off"]
    rows, goals, figures = [], {}, {}
    for name, runs in results.items():
        batch_ratios = [r["batch_rps"] / o["batch_rps"] for r, o in zip(runs, off, strict=True)]
        single_ratios = [
            r["single_c16_rps"] / o["single_c16_rps"] for r, o in zip(runs, off, strict=True)
        ]
        dropped = sum(r["rows_dropped"] for r in runs)
        answered = sum(r["rows_answered"] for r in runs)
        figure = {
            "batch_rps": median([r["batch_rps"] for r in runs]),
            "batch_p50_ms": median([r["batch_p50_ms"] for r in runs]),
            "batch_ratio": median(batch_ratios),
            "batch_ratio_spread": [round(min(batch_ratios), 3), round(max(batch_ratios), 3)],
            "single_c16_rps": median([r["single_c16_rps"] for r in runs]),
            "single_ratio": median(single_ratios),
            "single_ratio_spread": [round(min(single_ratios), 3), round(max(single_ratios), 3)],
            "rows_answered": answered,
            "rows_dropped": dropped,
            "every_row_accounted": all(r["every_row_accounted"] is not False for r in runs),
            "peak_rss_mb": round(peaks[name], 1),
            "rss_over_off_mb": round(peaks[name] - peaks["log off"], 1),
            "rounds": runs,
        }
        figures[name] = figure
        rows.append(
            [
                name,
                f"{figure['batch_rps']:.1f}",
                f"{figure['batch_p50_ms']}",
                "-" if name == "log off" else _ratio(figure["batch_ratio"], batch_ratios),
                "-" if name == "log off" else f"{dropped:,.0f} of {answered:,}",
                f"{figure['single_c16_rps']:,.0f}",
                "-" if name == "log off" else _ratio(figure["single_ratio"], single_ratios),
                f"{figure['peak_rss_mb']:.0f}"
                + ("" if name == "log off" else f" ({figure['rss_over_off_mb']:+.0f})"),
            ]
        )
        if name == "log off":
            continue
        goals[f"{name}: 1,000 rows c=1 >= 75% of log off"] = (
            figure["batch_ratio"] >= GOALS["batch_ratio"]
        )
        goals[f"{name}: 0 rows dropped at full 1,000-row load (every row accounted)"] = (
            dropped == 0 and figure["every_row_accounted"]
        )
        goals[f"{name}: single row c=16 >= 90% of log off"] = (
            figure["single_ratio"] >= GOALS["single_ratio"]
        )
        goals[f"{name}: peak RSS within 100 MB of log off"] = (
            figure["rss_over_off_mb"] <= GOALS["rss_mb"]
        )
    markdown = table(
        [
            "log",
            "1,000 rows c=1, req/s",
            "p50 ms",
            "vs log off (goal >= 75%)",
            "rows dropped (goal 0)",
            "1 row c=16, req/s",
            "vs log off (goal >= 90%)",
            "peak RSS tree, MB (goal <= +100)",
        ],
        rows,
    )
    return {"figures": figures, "goals": goals, "markdown": markdown}


def _ratio(value: float, values: list[float]) -> str:
    return f"{value:.0%} ({min(values):.0%}-{max(values):.0%})"
