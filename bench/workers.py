"""One worker against two, the prediction log on, on this 2-core machine (load generator included).

Single-row requests at c=16 and 1,000-row requests at c=4, interleaved rounds; the CPU of every
process of the server (workers and their log writers) is recorded, and each worker's own share
(with keep-alive connections, wrk's connections can all land on one worker).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    Uvicorn,
    cpu_seconds,
    median,
    process_tree,
    table,
    tree_cpu_seconds,
)
from bench.serving import wrk
from src.data import load_dataset
from src.schema import FEATURES

ROOT = Path(__file__).resolve().parent.parent


def _script(work: Path, name: str, body: bytes) -> Path:
    data = work / f"{name}.json"
    data.write_bytes(body)
    script = work / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{data}"); wrk.body = f:read("*a"); f:close()\n'
    )
    return script


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
        "1 row, c=16": (_script(work, "one", json.dumps([row]).encode()), 16),
        "1,000 rows, c=4": (
            _script(work, "batch", frame[list(FEATURES)].to_json(orient="records").encode()),
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
        for name, (script, connections) in loads.items():
            for _ in range(rounds):
                for n, server in servers.items():
                    workers = _worker_pids(server, n)
                    before = tree_cpu_seconds(server.pid), [cpu_seconds(w) for w in workers]
                    rps = wrk(
                        server.url + "/predict",
                        connections=connections,
                        seconds=seconds,
                        script=script,
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
    rows, ratios = [], {}
    for name, by_workers in measured.items():
        rps = {n: median([r["rps"] for r in runs]) for n, runs in by_workers.items()}
        ratios[name] = round(rps[2] / rps[1], 2)
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
                    f"{ratios[name]:.2f}x" if n == 2 else "-",
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
            "2 workers vs 1",
        ],
        rows,
    )
    return {
        "measured": measured,
        "ratio_2_vs_1": ratios,
        "goals": {"two_workers_single_row >= 1.4x one": ratios["1 row, c=16"] >= 1.4},
        "markdown": markdown,
    }
