"""Swaps: how soon every worker serves a moved champion, how soon a rollback lands, and how soon
a fresh worker is ready, on a quiet machine and again beside a training run.

A registry in a temporary folder holds two versions (the artifacts' set and one trained with
another seed), each with its trees compiled when registered. Two uvicorn workers serve it under a
steady load of single rows (`hey`, a fresh connection per request, so both workers get some).
The champion moves, then rolls back; each worker's log says when it swapped and how long the
swap itself took (noticed -> serving). Then a fresh worker starts on the kept build.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, Uvicorn, table
from src.loop.tables import make_engine, upgrade
from src.registry.actions import build_trees, register_trained, rollback
from src.registry.core import CHAMPION, Registry
from src.settings import Settings

POLL_SECONDS = 2.0
LOAD_RPS = 200  # single rows, offered, while the champion moves
GOALS = {
    "promote": POLL_SECONDS + 2.0,  # alias moved -> every worker serving it
    "rollback": POLL_SECONDS + 1.0,  # ... and the swap itself within 1 s of the poll
    "fresh worker": 3.0,  # spawn -> /ready, with the compiled trees kept
}


def _train(outdir: Path, seed: int, trials: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "src.train", "--outdir", str(outdir), "--no-register"]
    command += ["--seed", str(seed), "--trials", str(trials)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _swaps(log: Path, version: str, after: float) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"model swapped"' not in line:
            continue
        event = json.loads(line)
        moment = datetime.fromisoformat(event["ts"]).timestamp()
        if event["to"] == version and moment >= after:
            found.append({**event, "at": moment})
    return found


def _wait_swapped(log: Path, version: str, after: float, workers: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 120
    while len(found := _swaps(log, version, after)) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"the workers did not all swap to {version}; see {log}")
        time.sleep(0.05)
    return found


def _load(url: str, body: Path, seconds: int, out: dict[str, Any]) -> None:
    command = ["hey", "-z", f"{seconds}s", "-c", "4", "-q", str(LOAD_RPS // 4)]
    command += ["-disable-keepalive", "-m", "POST", "-T", "application/json", "-D", str(body)]
    result = subprocess.run([*command, "-o", "csv", url], capture_output=True, text=True)
    codes = [line.split(",")[6] for line in result.stdout.splitlines()[1:] if line]
    out["requests"] = len(codes)
    out["failed"] = sum(code != "200" for code in codes)
    out["expected"] = LOAD_RPS * seconds


def _scenario(work: Path, registry: Registry, a: str, b: str, body: Path, name: str) -> dict:
    log = work / f"server-{name}.log"
    server = Uvicorn(
        "src.app:app",
        log,
        "/ready",
        workers=2,
        PREDICTION_LOG_DIR=str(registry.store.parent),
        MODEL_POLL_SECONDS=str(POLL_SECONDS),
    )
    load: dict[str, Any] = {}
    seconds = 24
    loader = threading.Thread(target=_load, args=(server.url + "/predict", body, seconds, load))
    try:
        time.sleep(3)  # both workers up
        loader.start()
        time.sleep(3)
        registry.move(CHAMPION, b, expected=a, kind="forced", actor="bench", reason="swap bench")
        moved = time.time()
        promoted = _wait_swapped(log, b, moved, 2)
        time.sleep(2)
        code, outcome = rollback(registry, Settings(), actor="bench", reason="swap bench")
        rolled = time.time()
        if code != 0:
            raise SystemExit(f"the bench's rollback was refused: {outcome}")
        back = _wait_swapped(log, a, rolled, 2)
        loader.join()
    finally:
        server.stop()
    started = time.perf_counter()
    fresh = Uvicorn(
        "src.app:app",
        work / f"fresh-{name}.log",
        "/ready",
        PREDICTION_LOG_DIR=str(registry.store.parent),
    )
    ready = time.perf_counter() - started
    fresh.stop()
    return {
        "promote_every_worker_s": round(max(s["at"] for s in promoted) - moved, 2),
        "promote_swap_s": max(s["seconds"] for s in promoted),
        "rollback_every_worker_s": round(max(s["at"] for s in back) - rolled, 2),
        "rollback_swap_s": max(s["seconds"] for s in back),
        "fresh_worker_ready_s": round(ready, 2),
        **load,
    }


def run(artifacts: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    print("  training a second version (seed 7, no search)", flush=True)
    if _train(work / "second", seed=7, trials=0).wait() != 0:
        raise SystemExit("training the second version failed")
    settings = Settings(PREDICTION_LOG_DIR=work / "state", REGISTRY_COMPILE=True)
    engine = make_engine(settings.registry_url)
    upgrade(engine)
    registry = Registry(engine, settings.registry_store)
    print("  registering both, compiling their trees once", flush=True)
    register_trained(registry, artifacts, settings, actor="bench")
    a = registry.alias(CHAMPION)
    b, _ = registry.register(work / "second", actor="bench")
    build_trees(registry, b)
    row = json.loads((artifacts / "sample_rows.json").read_text())["rows"][0]
    body = work / "one.json"
    body.write_text(json.dumps([row]))
    results = {"quiet": _scenario(work, registry, a, b, body, "quiet")}
    print("  again, beside a training run", flush=True)
    busy = _train(work / "busy", seed=3, trials=20)
    try:
        results["beside training"] = _scenario(work, registry, a, b, body, "busy")
    finally:
        busy.kill()
        busy.wait()
    return _report(results)


def _report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = [
        [
            name,
            f"{r['promote_every_worker_s']} s ({r['promote_swap_s']} s)",
            f"{r['rollback_every_worker_s']} s ({r['rollback_swap_s']} s)",
            f"{r['fresh_worker_ready_s']} s",
            f"{r['requests']:,} / {r['failed']}",
        ]
        for name, r in results.items()
    ]
    headers = [
        "machine",
        f"moved -> every worker serving (the swap itself); goal <= {GOALS['promote']:.0f} s",
        f"rollback -> every worker (the swap itself); goal <= {GOALS['rollback']:.0f} s (1 s)",
        f"fresh worker ready; goal <= {GOALS['fresh worker']:.0f} s",
        "requests / failed",
    ]
    goals = {}
    for name, r in results.items():
        goals[f"{name}: every worker serves a moved champion within poll + 2 s"] = (
            r["promote_every_worker_s"] <= GOALS["promote"]
        )
        goals[f"{name}: a rollback lands within 1 s of the poll"] = (
            r["rollback_swap_s"] <= 1.0 and r["rollback_every_worker_s"] <= GOALS["rollback"]
        )
        goals[f"{name}: a fresh worker is ready within 3 s (compiled trees kept)"] = (
            r["fresh_worker_ready_s"] <= GOALS["fresh worker"]
        )
        goals[f"{name}: 0 failed requests"] = r["failed"] == 0
    markdown = (
        f"Two workers, MODEL_POLL_SECONDS={POLL_SECONDS:g}, {LOAD_RPS} single-row requests/s "
        "offered (fresh connections).\n\n" + table(headers, rows)
    )
    return {"results": results, "goals": goals, "markdown": markdown}
