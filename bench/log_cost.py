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

import contextlib
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    Uvicorn,
    census_features,
    census_tables,
    cpu_seconds,
    median,
    process_tree,
    rss_mib,
    table,
    wrk_script,
)
from bench.common import census as load_dataset
from bench.log_capacity import _buffered, _metric, fresh_postgres
from src.loop.tables import make_engine

FEATURES = census_features()


ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 5  # the machine is shared: more rounds, a steadier median
SECONDS = 10
SUSTAINED_SECONDS = 60  # per server, back to back (issue 33: the rounds hid the writer's lag)
ROLES = ("worker", "writer", "postgresql")
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
    answered_before = _metric(server.url, "predicted_rows_total")
    logged_before = _logged_rows(log_url) if log_url else 0
    postgres = _postgres_pids(log_url)
    cpu_before = _cpu(server.pid, postgres)
    batch_run = _wrk(url, batch, connections=1, seconds=seconds)
    _settle(server, log_url)
    cpu_after = _cpu(server.pid, postgres)
    cpu = {role: cpu_after[role] - spent for role, spent in cpu_before.items()}
    dropped = _metric(server.url, "prediction_log_dropped_rows_total") - dropped_before
    # The server's own count: wrk does not count a request it sent as its time ran out.
    answered = _metric(server.url, "predicted_rows_total") - answered_before
    logged = (_logged_rows(log_url) - logged_before) if log_url else 0
    cpu_before = _cpu(server.pid, postgres)
    single_run = _wrk(url, single, connections=16, seconds=seconds)
    _settle(server, log_url)
    cpu_after = _cpu(server.pid, postgres)
    single_cpu = {role: cpu_after[role] - spent for role, spent in cpu_before.items()}
    return {
        "batch_rps": batch_run["rps"],
        "batch_p50_ms": batch_run["p50_ms"],
        "rows_answered": answered,
        "rows_logged": logged,
        "rows_dropped": dropped,
        "every_row_accounted": (logged + dropped == answered) if log_url else None,
        "single_c16_rps": single_run["rps"],
        # CPU seconds per 1,000-row request, load and catch-up: who pays for the log.
        "cpu_ms_per_request": {
            role: round(seconds * 1000 / max(batch_run["requests"], 1), 2)
            for role, seconds in cpu.items()
        },
        "cpu_us_per_single_row_request": {
            role: round(seconds * 1e6 / max(single_run["requests"], 1), 1)
            for role, seconds in single_cpu.items()
        },
    }


def sustained(server: Uvicorn, log_url: str | None, batch: Path, seconds: int) -> dict[str, Any]:
    """1,000-row requests back to back for `seconds` against one server alone: the writer gets no
    pause while the other servers take their turn, as it does in the alternating rounds."""
    url = server.url + "/predict"
    _settle(server, log_url)
    dropped_before = _metric(server.url, "prediction_log_dropped_rows_total")
    answered_before = _metric(server.url, "predicted_rows_total")
    logged_before = _logged_rows(log_url) if log_url else 0
    run = _wrk(url, batch, connections=1, seconds=seconds)
    _settle(server, log_url)
    answered = _metric(server.url, "predicted_rows_total") - answered_before
    dropped = _metric(server.url, "prediction_log_dropped_rows_total") - dropped_before
    logged = (_logged_rows(log_url) - logged_before) if log_url else 0
    return {
        "seconds": seconds,
        "batch_rps": run["rps"],
        "batch_p50_ms": run["p50_ms"],
        "rows_answered": answered,
        "rows_logged": logged,
        "rows_dropped": dropped,
        "every_row_accounted": (logged + dropped == answered) if log_url else None,
    }


def sustained_markdown(runs: dict[str, dict[str, Any]]) -> str:
    off = runs["log off"]["batch_rps"]
    rows = [
        [
            name,
            f"{r['batch_rps']:.1f}",
            f"{r['batch_p50_ms']:.2f}",
            "-" if name == "log off" else f"{r['batch_rps'] / off:.0%}",
            "-" if name == "log off" else f"{r['rows_dropped']:,.0f} of {r['rows_answered']:,.0f}",
            "-" if name == "log off" else ("yes" if r["every_row_accounted"] else "NO"),
        ]
        for name, r in runs.items()
    ]
    return table(
        [
            "log",
            "1,000 rows c=1, req/s",
            "p50 ms",
            "vs log off (goal >= 75%)",
            "rows dropped (goal 0)",
            "logged + dropped = answered",
        ],
        rows,
    )


def _drop_database(url: str | None) -> None:
    """A database this bench made, dropped: PostgreSQL is shared, and a run writes gigabytes."""
    if not url:
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        name = url.rsplit("/", 1)[1]
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _postgres_pids(log_url: str | None) -> list[int]:
    """The server processes that work for this log: its database's backends and the shared
    background ones (WAL writer, checkpointer), not other databases' backends."""
    if not (log_url and log_url.startswith("postgresql")):
        return []
    from sqlalchemy import text

    engine = make_engine(log_url)
    with engine.connect() as connection:
        pids = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "OR backend_type <> 'client backend'"
            )
        ).scalars()
        found = [int(p) for p in pids]
    engine.dispose()
    return found


def _cpu(pid: int, postgres: list[int]) -> dict[str, float]:
    """CPU seconds so far: the worker, its log writer, and PostgreSQL's processes for the log."""
    spent = {"worker": cpu_seconds(pid), "writer": 0.0, "postgresql": 0.0}
    for member in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):
            spent["writer"] += cpu_seconds(member)  # the writer, and the (idle) resource tracker
    for member in postgres:
        with contextlib.suppress(OSError):
            spent["postgresql"] += cpu_seconds(member)
    return spent


def run(artifacts: Path, *, rounds: int = ROUNDS, seconds: int = SECONDS) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-log-cost-"))
    frame = load_dataset(ROOT / "data" / "adult_synth.csv").features
    batch = wrk_script(
        work, "batch", frame.head(1000)[list(FEATURES)].to_json(orient="records").encode()
    )
    single = wrk_script(
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
        held = {
            name: sustained(servers[name][0], logs[name], batch, SUSTAINED_SECONDS)
            for name in results
        }
    finally:
        peaks = {name: rss.stop() for name, (_, rss) in servers.items()}
        for server, _ in servers.values():
            server.stop()
        _drop_database(logs["PostgreSQL"])
        shutil.rmtree(work, ignore_errors=True)  # the SQLite log: a gigabyte a run
    found = summary(results, peaks)
    found["sustained"] = held
    off = held["log off"]["batch_rps"]
    for name, run in held.items():
        if name == "log off":
            continue
        held_for = f"{name}, sustained {SUSTAINED_SECONDS} s"
        found["goals"][f"{held_for}: 1,000 rows c=1 >= 75% of log off"] = (
            run["batch_rps"] / off >= GOALS["batch_ratio"]
        )
        found["goals"][f"{held_for}: 0 rows dropped"] = (
            run["rows_dropped"] == 0 and run["every_row_accounted"]
        )
    found["markdown"] += (
        f"\n\nSustained: 1,000-row requests back to back for {SUSTAINED_SECONDS} s per server, "
        "alone (the default policy, bounded backpressure):\n\n"
    )
    found["markdown"] += sustained_markdown(held)
    found["profile"] = profile(artifacts)
    found["markdown"] += "\n\nWhere the time goes (in-process, each step alone):\n\n"
    found["markdown"] += profile_markdown(found["profile"])
    return found


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
        # The ratio of the medians shown (what a reader checks by dividing); the per-round
        # ratios give its range (the machine's noise).
        figure = {
            "batch_rps": median([r["batch_rps"] for r in runs]),
            "batch_p50_ms": median([r["batch_p50_ms"] for r in runs]),
            "batch_ratio": median([r["batch_rps"] for r in runs])
            / median([o["batch_rps"] for o in off]),
            "batch_ratio_spread": [round(min(batch_ratios), 3), round(max(batch_ratios), 3)],
            "single_c16_rps": median([r["single_c16_rps"] for r in runs]),
            "single_ratio": median([r["single_c16_rps"] for r in runs])
            / median([o["single_c16_rps"] for o in off]),
            "single_ratio_spread": [round(min(single_ratios), 3), round(max(single_ratios), 3)],
            "rows_answered": answered,
            "rows_dropped": dropped,
            "every_row_accounted": all(r["every_row_accounted"] is not False for r in runs),
            **{
                key: {role: median([r[key][role] for r in runs]) for role in runs[0][key]}
                for key in ("cpu_ms_per_request", "cpu_us_per_single_row_request")
            },
            "peak_rss_mb": round(peaks[name], 1),
            "rss_over_off_mb": round(peaks[name] - peaks["log off"], 1),
            "rounds": runs,
        }
        figures[name] = figure
        rows.append(
            [
                name,
                f"{figure['batch_rps']:.1f}",
                f"{figure['batch_p50_ms']:.2f}",
                "-" if name == "log off" else _ratio(figure["batch_ratio"], batch_ratios),
                "-" if name == "log off" else f"{dropped:,.0f} of {answered:,.0f}",
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
    cpu_rows = [
        [
            name,
            *(
                f"{f['cpu_ms_per_request'][role]:.2f}"
                for role in ("worker", "writer", "postgresql")
            ),
            *(
                f"{f['cpu_us_per_single_row_request'][role]:.0f}"
                for role in ("worker", "writer", "postgresql")
            ),
        ]
        for name, f in figures.items()
    ]
    markdown += "\n\nCPU per request, medians (load and catch-up; PostgreSQL: its processes):\n\n"
    markdown += table(
        [
            "log",
            "1,000 rows: worker ms",
            "writer ms",
            "PostgreSQL ms",
            "1 row: worker us",
            "writer us",
            "PostgreSQL us",
        ],
        cpu_rows,
    )
    return {"figures": figures, "goals": goals, "markdown": markdown}


def _ratio(value: float, values: list[float]) -> str:
    return f"{value:.0%} ({min(values):.0%}-{max(values):.0%})"


# --- where the time goes, in-process: each step of the hand-off alone --------------------------


def _per_call_us(action: Any, repeat: int = 30) -> float:
    action()  # warm
    started = time.perf_counter()
    for _ in range(repeat):
        action()
    return (time.perf_counter() - started) / repeat * 1e6


def _text_copy(
    cursor: Any, table: str, columns: tuple[str, ...], types: tuple[str, ...], rows: Any
) -> None:
    """The COPY this project used before binary COPY: text, every number and time parsed back."""
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _insert_cost(url: str, shipments: list[list[tuple[Any, ...]]], text_copy: bool) -> dict:
    """CPU us per row of BatchWriter inserting shipments: this process, and PostgreSQL's backend."""
    from src.loop import inserts
    from src.loop.inserts import BatchWriter
    from src.loop.metrics_files import CounterFile
    from src.loop.tables import upgrade

    engine = make_engine(url)
    upgrade(engine)
    writer = BatchWriter(
        engine, log_sensitive=True, counters=CounterFile(None), tables=census_tables(engine)
    )
    backend = None
    if writer.dialect == "postgresql":
        connection = engine.raw_connection()
        backend = connection.driver_connection.info.backend_pid
        connection.close()
    binary = inserts._copy
    if text_copy:
        inserts._copy = _text_copy
        writer._when = lambda ts: ts.isoformat(" ", timespec="microseconds")  # text, as before
    try:
        writer.write(shipments[0], stop_waiting=lambda: True)  # warm
        rows = sum(r[5].rows for shipment in shipments[1:] for r in shipment)
        server_before = cpu_seconds(backend) if backend else 0.0
        started = time.process_time()
        for shipment in shipments[1:]:
            writer.write(shipment, stop_waiting=lambda: True)
        spent = time.process_time() - started
        server = (cpu_seconds(backend) - server_before) if backend else 0.0
    finally:
        inserts._copy = binary
        engine.dispose()
        if writer.dialect == "postgresql":
            _drop_database(url)
    return {"client_us_per_row": spent / rows * 1e6, "server_us_per_row": server / rows * 1e6}


def profile(artifacts: Path) -> dict[str, Any]:
    """One 1,000-row request's hand-off, step by step, the body form (as before this change,
    and still for requests under 8 rows) against the columnar form."""
    import pickle
    from datetime import UTC, datetime
    from multiprocessing.reduction import ForkingPickler

    from src.loop.handoff import Served, column_layout
    from src.loop.ids import new_request_key
    from src.loop.inserts import BatchWriter, _Block
    from src.loop.metrics_files import CounterFile
    from src.model.artifacts import load_bundle
    from src.model.predictor import Predictor
    from src.service.body import parse_rows

    frame = load_dataset(ROOT / "data" / "adult_synth.csv").features
    body = frame.head(1000)[list(FEATURES)].to_json(orient="records").encode()
    predictor = Predictor(load_bundle(artifacts), engine="lleaves")
    parsed = parse_rows(body, predictor, 10_000)
    probabilities = predictor.probabilities(parsed.matrix)
    layout = column_layout(predictor.encoder)
    forms = {
        "body": lambda: Served.of(body, probabilities, "v", 0.5, new_request_key()),
        "columns": lambda: Served.of_columns(
            layout, parsed.matrix, parsed.columns, probabilities, "v", 0.5, new_request_key()
        ),
    }
    memory = make_engine("sqlite://")
    writer = BatchWriter(
        memory, log_sensitive=True, counters=CounterFile(None), tables=census_tables(memory)
    )
    steps: dict[str, dict[str, float]] = {}
    shipments: dict[str, list[list[tuple[Any, ...]]]] = {}
    for name, make in forms.items():
        served = make()
        now = datetime.now(UTC)
        shipment = [("r", now, "/predict", 200, 1.0, make()) for _ in range(20)]
        pickled = pickle.dumps(shipment)
        steps[name] = {
            "hand-off built on the request path, us": _per_call_us(make),
            "bytes held while waiting": served.size,
            "pickled for the writer (its share of a 20-request put), us": _per_call_us(
                lambda shipment=shipment: ForkingPickler.dumps((shipment, 0, {})), 10
            )
            / 20,
            "unpickled by the writer, us": _per_call_us(
                lambda pickled=pickled: pickle.loads(pickled),  # noqa: S301 - our own bytes
                10,
            )
            / 20,
            "rows to columns in the writer, us": _per_call_us(
                lambda served=served, now=now: writer._extend(
                    _Block(len(writer.tables.prediction_columns)), "r", now, served
                )
            ),
        }
        shipments[name] = [
            [("r", datetime.now(UTC), "/predict", 200, 1.0, make()) for _ in range(20)]
            for _ in range(6)
        ]
    work = Path(tempfile.mkdtemp(prefix="bench-log-profile-"))
    inserts = {
        "SQLite executemany over columns": _insert_cost(
            f"sqlite:///{work / 'p.db'}", shipments["columns"], text_copy=False
        )
    }
    postgres = fresh_postgres()
    if postgres:
        inserts["PostgreSQL binary COPY"] = _insert_cost(postgres, shipments["columns"], False)
    postgres = fresh_postgres()
    if postgres:
        inserts["PostgreSQL text COPY (before)"] = _insert_cost(postgres, shipments["body"], True)
    shutil.rmtree(work, ignore_errors=True)
    return {"steps": steps, "inserts": inserts}


def profile_markdown(found: dict[str, Any]) -> str:
    steps, inserts = found["steps"], found["inserts"]
    rows = [
        [step, *(f"{steps[form][step]:,.0f}" for form in ("body", "columns"))]
        for step in steps["body"]
    ]
    first = table(["one 1,000-row request", "body (before)", "columns (now)"], rows)
    second = table(
        ["insert, CPU per row", "the writer, us", "PostgreSQL's backend, us"],
        [
            [name, f"{v['client_us_per_row']:.2f}", f"{v['server_us_per_row']:.2f}"]
            for name, v in inserts.items()
        ],
    )
    return first + "\n\n" + second
