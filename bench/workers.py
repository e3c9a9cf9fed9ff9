"""One worker against two, the prediction log on, on this 2-core machine (load generator included).

Single-row requests at c=16 and 1,000-row requests at c=4, interleaved rounds, from `hey` with a
new connection per request: the kernel hands each accepted connection to one worker, so wrk's few
keep-alive connections often all landed on one worker (2 workers measured 0.65-1.48x one across 7
passes that way), while short-lived connections spread over both. The CPU of every process of
the server (workers and their log writers) is recorded, and each worker's own share.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    Uvicorn,
    census_features,
    cpu_seconds,
    median,
    process_tree,
    table,
    tree_cpu_seconds,
)
from bench.common import census as load_dataset

FEATURES = census_features()

ROOT = Path(__file__).resolve().parent.parent


def _body(work: Path, name: str, body: bytes) -> Path:
    data = work / f"{name}.json"
    data.write_bytes(body)
    return data


def hey_spread(url: str, body: Path, *, connections: int, seconds: int) -> float:
    """Requests per second from `hey`, a new connection per request (spread over workers)."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(connections), "-disable-keepalive"]
    command += ["-m", "POST", "-T", "application/json", "-D", str(body), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    statuses = out.partition("Status code distribution:")[2].partition("Error distribution")
    if re.search(r"\[(?!200\])\d{3}\]", statuses[0]) or statuses[1]:
        raise SystemExit(f"hey saw non-200 answers from {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def _worker_pids(server: Uvicorn, workers: int) -> list[int]:
    """The processes that serve: uvicorn itself when it runs alone, else its worker children
    (not the log writers below them, not multiprocessing's resource tracker)."""
    if workers == 1:
        return [server.pid]
    tree = process_tree(server.pid)
    return [p for p in tree if p != server.pid and _parent(p) == server.pid and _is_worker(p)]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _is_worker(pid: int) -> bool:
    return "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text(errors="ignore")


def run(artifacts: Path, *, seconds: int = 6, rounds: int = 3) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    row = json.loads((artifacts / "sample_rows.json").read_text())["rows"][0]
    frame = load_dataset(ROOT / "data" / "adult_synth.csv").features.head(1000)
    loads = {
        "1 row, c=16": (_body(work, "one", json.dumps([row]).encode()), 16),
        "1,000 rows, c=4": (
            _body(work, "batch", frame[list(FEATURES)].to_json(orient="records").encode()),
            4,
        ),
    }
    servers = {
        n: Uvicorn(
            "src.app:app",
            work / f"w{n}.log",
            "/ready",
            workers=n,
            ARTIFACTS_DIR=str(artifacts),
            PREDICTION_LOG_DIR=str(work / f"log{n}"),
        )
        for n in (1, 2)
    }
    measured: dict[str, dict[int, list[dict[str, Any]]]] = {k: {1: [], 2: []} for k in loads}
    try:
        for name, (body, connections) in loads.items():
            for _ in range(rounds):
                for n, server in servers.items():
                    workers = _worker_pids(server, n)
                    before = tree_cpu_seconds(server.pid), [cpu_seconds(w) for w in workers]
                    rps = hey_spread(
                        server.url + "/predict", body, connections=connections, seconds=seconds
                    )
                    cpu = (tree_cpu_seconds(server.pid) - before[0]) / seconds
                    shares = [
                        round((cpu_seconds(w) - b) / seconds, 2)
                        for w, b in zip(workers, before[1], strict=True)
                    ]
                    measured[name][n].append({"rps": rps, "cpu": cpu, "workers_cpu": shares})
    finally:
        for server in servers.values():
            server.stop()
    return _summary(measured)


def _summary(measured: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    rows, ratios, spreads = [], {}, {}
    for name, by_workers in measured.items():
        rps = {n: median([r["rps"] for r in runs]) for n, runs in by_workers.items()}
        ratios[name] = round(rps[2] / rps[1], 2)
        per_round = [b["rps"] / a["rps"] for a, b in zip(by_workers[1], by_workers[2], strict=True)]
        spreads[name] = [round(min(per_round), 2), round(max(per_round), 2)]
        for n, runs in by_workers.items():
            per_request_us = median([r["cpu"] / r["rps"] * 1e6 for r in runs])
            rows.append(
                [
                    name,
                    n,
                    f"{rps[n]:,.0f}",
                    f"{median([r['cpu'] for r in runs]):.2f}",
                    " / ".join(str(s) for s in runs[-1]["workers_cpu"]),
                    f"{per_request_us:,.0f}",
                    f"{ratios[name]:.2f}x ({spreads[name][0]:.2f}-{spreads[name][1]:.2f})"
                    if n == 2
                    else "-",
                ]
            )
    markdown = table(
        [
            "load",
            "workers",
            "req/s",
            "server CPU (cores)",
            "each worker's CPU, last round",
            "server CPU per request, us",
            "2 workers vs 1 (rounds' range)",
        ],
        rows,
    )
    return {
        "measured": measured,
        "ratio_2_vs_1": ratios,
        "ratio_2_vs_1_range": spreads,
        "load": "hey, a new connection per request",
        "goals": {"two_workers_single_row >= 1.4x one": ratios["1 row, c=16"] >= 1.4},
        "markdown": markdown,
    }
