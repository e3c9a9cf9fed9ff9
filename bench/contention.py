"""Training shares the machine: `make train` beside two busy processes, and serving's p99 beside
a retraining, each against its own quiet figure measured in the same run.

1. The train command `make train` runs (20 trials, no registration), alone, then beside two
   processes that spin (`python -c "while True: pass"`). The same with the old setting (two
   OpenMP threads per fit, OpenMP's default waiting, folds one at a time: TRAIN_THREADS=2 and an
   empty OMP_WAIT_POLICY, which libgomp reads as unset) at 2 trials, for comparison.
2. One uvicorn worker (prediction log on, as deployed), single rows at a fixed offered rate
   (`hey -q`), idle, then while a retraining runs beside it the way the agent runs one (the
   thread policy, at a lower priority), then while the same training runs at normal priority.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Uvicorn, table
from bench.serving import hey_fixed_rate

RATE = 500  # single rows per second, offered
SECONDS = 20
TRAIN_GOAL, P99_GOAL = 2.5, 2.0
SPIN = "while True: pass"
AGENT_WAY = "beside a retraining the agent's way (lower priority, thread policy, 20 trials)"
AGENT_RETRAIN = (
    "import sys; from pathlib import Path; "
    "from src.training.threads import configure_openmp, politely; "
    "configure_openmp(); from src.training.train import train; "
    "politely(lambda: train(Path('data/adult_synth.csv'), Path(sys.argv[1]), trials=20))"
)


def _train(outdir: Path, trials: int, env: dict[str, str] | None = None) -> float:
    command = [sys.executable, "-m", "src.train", "--outdir", str(outdir), "--no-register"]
    started = time.perf_counter()
    subprocess.run(
        [*command, "--trials", str(trials)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def _beside_spinners(work: Any) -> Any:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
    try:
        return work()
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def training_beside_busy(work: Path) -> dict[str, Any]:
    old = {"TRAIN_THREADS": "2", "OMP_WAIT_POLICY": ""}  # "": libgomp's default, as before
    figures = {
        "policy, alone": _train(work / "a", 20),
        "policy, beside 2 busy": _beside_spinners(lambda: _train(work / "b", 20)),
        "old setting (2 threads), 2 trials, alone": _train(work / "c", 2, old),
        "old setting (2 threads), 2 trials, beside 2 busy": _beside_spinners(
            lambda: _train(work / "d", 2, old)
        ),
    }
    return {k: round(v, 1) for k, v in figures.items()}


def serving_beside_training(artifacts: Path, work: Path) -> dict[str, Any]:
    row = json.loads((artifacts / "sample_rows.json").read_text())["rows"][0]
    body = work / "one.json"
    body.write_text(json.dumps([row]))
    server = Uvicorn(
        "src.app:app",
        work / "server.log",
        "/ready",
        ARTIFACTS_DIR=str(artifacts),
        PREDICTION_LOG_DIR=str(work / "log"),
        LOG_REQUESTS="false",
    )
    url = server.url + "/predict"
    results: dict[str, Any] = {}
    try:
        hey_fixed_rate(url, body, rate=RATE, seconds=5)  # warm
        results["idle"] = hey_fixed_rate(url, body, rate=RATE, seconds=SECONDS)
        for name, command in (
            (AGENT_WAY, [sys.executable, "-c", AGENT_RETRAIN]),
            (
                "beside a training at normal priority",
                [sys.executable, "-m", "src.train", "--no-register", "--outdir"],
            ),
        ):
            trainer = subprocess.Popen(
                [*command, str(work / name.replace(" ", "-"))],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(3)  # into the search
            results[name] = hey_fixed_rate(url, body, rate=RATE, seconds=SECONDS)
            results[name]["training_still_running"] = trainer.poll() is None
            trainer.kill()
            trainer.wait()
    finally:
        server.stop()
    return results


def run(artifacts: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-contention-"))
    print("  make train alone, then beside two busy processes", flush=True)
    train = training_beside_busy(work)
    print(f"  serving {RATE} single rows/s, idle and beside training", flush=True)
    serving = serving_beside_training(artifacts, work)
    train_ratio = train["policy, beside 2 busy"] / train["policy, alone"]
    old_ratio = (
        train["old setting (2 threads), 2 trials, beside 2 busy"]
        / train["old setting (2 threads), 2 trials, alone"]
    )
    idle = serving["idle"]["p99_ms"]
    rows = [[name, f"{seconds} s"] for name, seconds in train.items()]
    serve_rows = [
        [
            name,
            r["achieved_rps"],
            r["p50_ms"],
            r["p99_ms"],
            f"{r['p99_ms'] / idle:.2f}x",
            r["errors"],
        ]
        for name, r in serving.items()
    ]
    polite = serving[AGENT_WAY]
    markdown = "\n\n".join(
        [
            table(["training (make train's command)", "wall time"], rows),
            f"Beside two busy processes: **{train_ratio:.2f}x** its time alone (goal <= "
            f"{TRAIN_GOAL}x); the old setting: {old_ratio:.1f}x.",
            table(
                [
                    f"serving, {RATE} single rows/s offered",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "p99 / idle",
                    "errors",
                ],
                serve_rows,
            ),
        ]
    )
    goals = {
        f"make train beside two busy processes <= {TRAIN_GOAL}x alone ({train_ratio:.2f}x)": (
            train_ratio <= TRAIN_GOAL
        ),
        f"single-row p99 beside the agent's retraining <= {P99_GOAL}x idle "
        f"({polite['p99_ms'] / idle:.2f}x)": polite["p99_ms"] <= P99_GOAL * idle,
        f"0 errors beside the retraining ({polite['errors']})": polite["errors"] == 0,
    }
    return {
        "training": train,
        "train_ratio": round(train_ratio, 2),
        "old_setting_ratio": round(old_ratio, 2),
        "serving": serving,
        "goals": goals,
        "markdown": markdown,
    }
