"""python -m ops.soak: the stack (ops/stack.py) under mixed traffic and faults, one at a time,
counting every request, row, alert and act (`make soak`; SOAK_MINUTES, default 10).

Traffic goes through the load balancer: single rows and batches, some invalid, and the labels of
answered rows later through /feedback. The faults, on a fixed schedule, each with time to recover:
a worker killed (-9); a replica killed (-9) and restarted; PostgreSQL stalled (SIGSTOP, then
SIGCONT) and restarted; every connection of the log's writers terminated; a model that fails
verification promoted with --force; a good challenger promoted, then a rollback; ten times the
traffic; 100,000 labels at once. The report (var/soak/report.json and report.md) gives, per
fault, the requests and their answers, the rows answered, logged and dropped (counted, by
reason), the alerts that fired and resolved, what the agent did, and the seconds until every
replica served the champion again; for the whole run, the invariants (nothing lost silently,
only registered and verified versions served) and each process's memory. The exit code is 1
when an invariant fails.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.stack import (
    PYTHON,
    REPLICAS,
    ROOT,
    StackConfig,
    _cluster,
    down,
    scrape_seconds,
    service_env,
    start_replica,
    up,
    wait_ready,
)

OUT = ROOT / "var" / "soak"
BATCH_ROWS = 50
RATE = 40.0  # requests per second offered, in normal times
LABEL_SHARE = 0.3
LABEL_TRIES = 5  # a label request answered 502, 503 or 504 is tried again, as a client would
# Answers that say "not now" (a replica gone, the database away, a timeout at the balancer): a
# label post is idempotent (a repeated label is counted as repeated), so trying again is safe.
RETRIED = (502, 503, 504)
TIME_SCALE = 60  # one second of soak traffic is one minute of event time (X-Event-Time)
RECOVERY_GOAL = 30.0
SHIFT_SEED = 7  # the shifted traffic's draw: the same seed, the same acts
AGENT_LIMIT = 420.0  # seconds the agent has, after the shift, to act and the service to swap
# PredictionLogBehind fires once answered rows have waited this long (deploy/prometheus/rules.yml;
# a test holds the two equal). A stall shorter than this plus a scrape and an evaluation could
# end before any scrape saw it: the stall is made long enough that the alert must fire.
BEHIND_AFTER = 3.0
MEMORY_GOAL = 0.10  # each of the project's processes within 10% of its RSS after warm-up
# The stack's processes that are not the project's: reported, not held to the memory goal.
THIRD_PARTY = ("prometheus", "alertmanager", "haproxy", "postgres")


def _say(message: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


@dataclass
class Answer:
    at: float
    kind: str  # single, batch, invalid
    status: int | None  # None: no HTTP answer (connection error)
    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # the true labels of the rows sent
    version: str | None = None
    error: str = ""


class Traffic:
    """Mixed requests through the load balancer, paced; every answer recorded."""

    def __init__(
        self, config: StackConfig, rows: list[dict[str, Any]], labels: list[int], threads: int = 8
    ) -> None:
        self.config, self.rows, self.labels, self.threads = config, rows, labels, threads
        self.shifted: tuple[list[dict[str, Any]], list[int]] | None = None  # set: sent instead
        self.answers: list[Answer] = []
        self.rate = RATE
        self.started = time.time()
        self.base = self.started  # event time at `started`: set by run_soak
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def finish(self) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def event_time(self) -> str:
        """Compressed time: the monitoring job, run every minute, finds a closed hour to judge."""
        moment = self.base + (time.time() - self.started) * TIME_SCALE
        return datetime.fromtimestamp(moment, UTC).isoformat()

    def _body(self, rng: random.Random) -> tuple[str, bytes, list[int]]:
        draw = rng.random()
        if draw < 0.05:  # invalid: an unknown category, a string for a number
            row = dict(rng.choice(self.rows))
            row["age"] = "old" if draw < 0.025 else row["age"]
            row["workclass"] = "Astronaut" if draw >= 0.025 else row["workclass"]
            return "invalid", json.dumps([row]).encode(), []
        rows, labels = self.shifted or (self.rows, self.labels)
        picks = rng.sample(range(len(rows)), BATCH_ROWS if draw < 0.20 else 1)
        body = json.dumps([rows[i] for i in picks]).encode()
        return ("batch" if len(picks) > 1 else "single"), body, [labels[i] for i in picks]

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        host, port = self.config.host, self.config.lb_port
        connection = http.client.HTTPConnection(host, port, timeout=30)
        next_at = time.monotonic()
        while not self.stop.is_set():
            next_at += self.threads / self.rate
            kind, body, labels = self._body(rng)
            answer = Answer(time.time(), kind, None, labels=labels)
            headers = {"Content-Type": "application/json", "X-Event-Time": self.event_time()}
            try:
                connection.request("POST", "/predict", body, headers)
                response = connection.getresponse()
                data = response.read()
                answer.status = response.status
                if response.status == 200:
                    parsed = json.loads(data)
                    answer.ids = [p["prediction_id"] for p in parsed["predictions"]]
                    answer.version = parsed["model_version"]
            except (OSError, http.client.HTTPException) as exc:
                answer.error = f"{type(exc).__name__}: {exc}"[:120]
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=30)
            with self._lock:
                self.answers.append(answer)
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - 1.0)  # a stall does not become a burst


class Labeler:
    """Labels for a share of the answered rows, sent a few seconds later through /feedback."""

    def __init__(self, config: StackConfig, traffic: Traffic) -> None:
        self.config, self.traffic = config, traffic
        self.sent = self.stored = self.failed = 0
        self.requests: list[tuple[float, int, int | None]] = []  # (at, labels, HTTP status)
        self.stop = threading.Event()
        self._seen = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(timeout=60)
        self.flush()

    def _run(self) -> None:
        while not self.stop.wait(5.0):
            self.flush()

    def flush(self) -> None:
        answers = self.traffic.answers[self._seen :]
        self._seen += len(answers)
        rng = random.Random(self._seen)
        labels = [
            {"prediction_id": pid, "label": label}
            for a in answers
            for pid, label in zip(a.ids, a.labels, strict=False)
            if rng.random() < LABEL_SHARE
        ]
        for start in range(0, len(labels), 5000):
            self.send(labels[start : start + 5000])

    def send(self, labels: list[dict[str, Any]]) -> dict[str, Any] | None:
        """POST the labels as a client should: a 502, 503 or 504 (a replica gone, the database
        away) or a lost connection is tried again after Retry-After (or a second), up to
        LABEL_TRIES times; every try is recorded."""
        self.sent += len(labels)
        for _ in range(LABEL_TRIES):
            outcome, status, wait = self._post(labels)
            if outcome is not None:
                self.stored += outcome["stored"] + outcome["repeated"]
                return outcome
            if status is not None and status not in RETRIED:
                break  # refused for good: trying again changes nothing
            time.sleep(wait)
        self.failed += len(labels)
        return None

    def _post(
        self, labels: list[dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, int | None, float]:
        token = service_env(self.config)["SERVICE_TOKEN"]
        request = urllib.request.Request(  # noqa: S310 - the stack's own load balancer
            f"{self.config.lb_url}/feedback",
            data=json.dumps({"labels": labels}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        at, status, wait = time.time(), None, 1.0
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                status = response.status
                return json.loads(response.read()), status, 0.0
        except urllib.error.HTTPError as exc:
            status = exc.code
            with contextlib.suppress(TypeError, ValueError):
                wait = min(float(exc.headers.get("Retry-After")), 5.0)
            return None, status, wait
        except (OSError, ValueError):
            return None, None, wait
        finally:
            self.requests.append((at, len(labels), status))


class Alerts:
    """Prometheus's alerts, polled: when each went pending, fired and resolved."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            with contextlib.suppress(OSError, ValueError):
                url = f"{self.config.prometheus_url}/api/v1/alerts"
                with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                    alerts = json.loads(response.read())["data"]["alerts"]
                self._update(alerts, time.time())

    def _update(self, alerts: list[dict[str, Any]], now: float) -> None:
        current = set()
        for alert in alerts:
            labels = alert["labels"]
            key = (labels["alertname"], labels.get("instance", labels.get("reason", "")))
            current.add(key)
            entry = self.seen.setdefault(key, {"alert": key[0], "on": key[1], "pending": now})
            if alert["state"] == "firing" and "firing" not in entry:
                entry["firing"] = now
        for key in list(self.seen):
            if key not in current:
                entry = self.seen.pop(key)
                entry["resolved"] = now
                self.history.append(entry)

    def all(self) -> list[dict[str, Any]]:
        return [*self.history, *self.seen.values()]


# --- the faults -----------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _workers(config: StackConfig, name: str) -> list[int]:
    """A replica's uvicorn workers (not their log writers below them)."""
    supervisor = config.state()["processes"][name]["pid"]
    return [p for p in _children(supervisor) if "spawn_main" in _command(p)]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _whole(config: StackConfig, name: str) -> bool:
    """The replica has its two workers, each with its log writer (a worker starts its writer
    once its model is loaded and verified)."""
    with contextlib.suppress(KeyError, OSError, ValueError):
        workers = _workers(config, name)
        return len(workers) == 2 and all(
            any("writer_process" in _command(c) for c in _children(w)) for w in workers
        )
    return False


def _postgres_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _sql(
    config: StackConfig, statement: str, params: dict[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(config.state()["database_url"], connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params or {})
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _registry(config: StackConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "src.registry", *args],
        cwd=ROOT,
        env={**os.environ, **service_env(config)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@dataclass
class Fault:
    name: str
    act: Callable[[StackConfig, dict[str, Any]], str]  # returns what it did, in words
    expected_alerts: tuple[str, ...]
    # Seconds the alert's own condition needs after the fault begins before it can hold (a
    # threshold on an age): its budget is this plus two scrape intervals.
    alert_after: float = 0.0


def kill_worker(config: StackConfig, ctx: dict[str, Any]) -> str:
    victim = _workers(config, "a")[0]
    ctx["fault_at"] = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.5)  # the supervisor notices
    return f"kill -9 of replica a's worker {victim} (uvicorn starts another)"


def kill_replica(config: StackConfig, ctx: dict[str, Any]) -> str:
    state = config.state()
    entry = state["processes"]["b"]
    ctx["fault_at"] = time.monotonic()
    os.killpg(entry["pid"], signal.SIGKILL)
    time.sleep(ctx["hold"])
    state["processes"]["b"] = start_replica(config, "b")
    config.pids.write_text(json.dumps(state, indent=2))
    return f"kill -9 of replica b (pid {entry['pid']}, its workers and writers), restarted"


def stall_postgres(config: StackConfig, ctx: dict[str, Any]) -> str:
    pids = _postgres_pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(ctx["stall"])
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return f"PostgreSQL's {len(pids)} processes stopped (SIGSTOP) for {ctx['stall']:.0f} s"


def restart_postgres(config: StackConfig, ctx: dict[str, Any]) -> str:
    version, name = _cluster()
    subprocess.run(["pg_ctlcluster", version, name, "restart", "-m", "fast"], check=True)
    return "PostgreSQL restarted (pg_ctlcluster restart, fast)"


def terminate_writers(config: StackConfig, ctx: dict[str, Any]) -> str:
    from src.loop.writer_process import APPLICATION_NAME

    rows = _sql(
        config,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name",
        {"name": APPLICATION_NAME},
    )
    if not rows:  # a fault that finds nothing to break would pass for nothing
        raise RuntimeError(f"no connection named '{APPLICATION_NAME}' to terminate")
    return f"{len(rows)} connections of the log's writers terminated (pg_terminate_backend)"


def promote_broken(config: StackConfig, ctx: dict[str, Any]) -> str:
    done = _registry(config, "promote", ctx["broken"], "--force", "--reason", "soak: broken")
    ctx["broken_promote_exit"] = done.returncode
    said = (done.stdout.strip() or done.stderr.strip()).splitlines()
    last = said[-1] if said else ""
    return (
        f"promote --force of a set whose model.pkl was corrupted: exit {done.returncode} ({last})"
    )


def promote_and_roll_back(config: StackConfig, ctx: dict[str, Any]) -> str:
    done = _registry(config, "promote", ctx["challenger"], "--force", "--reason", "soak")
    moved = _serving_everywhere(config, ctx["challenger"], 60)
    back = _registry(config, "rollback", "--reason", "soak: back")
    returned = _serving_everywhere(config, ctx["champion"], 60)
    return (
        f"challenger promoted (exit {done.returncode}), every replica served it after "
        f"{moved:.1f} s; rolled back (exit {back.returncode}), champion again after "
        f"{returned:.1f} s"
    )


def burst(config: StackConfig, ctx: dict[str, Any]) -> str:
    traffic: Traffic = ctx["traffic"]
    traffic.rate = RATE * 10
    time.sleep(ctx["burst"])
    traffic.rate = RATE
    return f"10x the traffic ({RATE * 10:.0f} requests/s offered) for {ctx['burst']:.0f} s"


def label_burst(config: StackConfig, ctx: dict[str, Any]) -> str:
    labeler: Labeler = ctx["labeler"]
    pairs = [
        (p, y) for a in list(ctx["traffic"].answers) for p, y in zip(a.ids, a.labels, strict=False)
    ]
    labels = [
        {"prediction_id": pairs[i % len(pairs)][0], "label": pairs[i % len(pairs)][1]}
        for i in range(100_000)
    ]
    ids = [p for p, _ in pairs]
    outcomes = [labeler.send(labels[s : s + 20_000]) for s in range(0, len(labels), 20_000)]
    taken = sum((o or {}).get("stored", 0) + (o or {}).get("repeated", 0) for o in outcomes)
    return f"100,000 labels in 5 requests ({len(set(ids)):,} distinct ids): {taken:,} taken"


# Faults that raise the same alert are kept apart: each alert has resolved before its next cause.
FAULTS = (
    Fault("worker killed", kill_worker, ("WorkerLost",)),
    Fault("PostgreSQL restarted", restart_postgres, ("PredictionLogDatabaseErrors",)),
    Fault("replica killed and restarted", kill_replica, ("ReplicaDown",)),
    Fault("PostgreSQL stalled", stall_postgres, ("PredictionLogBehind",), BEHIND_AFTER),
    Fault("a broken model promoted with --force", promote_broken, ()),
    Fault("challenger promoted, then rolled back", promote_and_roll_back, ()),
    Fault("10x traffic", burst, ()),
    Fault("100,000 labels", label_burst, ()),
    # Last: as far as can be from the restart, whose alert of the same name holds for a minute
    # after its last error (a short soak's faults come every few seconds).
    Fault(
        "log writers' connections terminated", terminate_writers, ("PredictionLogDatabaseErrors",)
    ),
)


# --- measuring ------------------------------------------------------------------------------------


def _ready(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:  # noqa: S310
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def champion(config: StackConfig) -> str | None:
    rows = _sql(config, "SELECT version FROM model_aliases WHERE alias = 'champion'")
    return rows[0][0] if rows else None


def _serving_everywhere(
    config: StackConfig, version: str | None, limit: float, *, whole: bool = False
) -> float:
    """Seconds until every replica is ready, its log up, and serves `version` (the champion
    when None), and with `whole`, has its two workers with their writers again; `limit` + 1
    when that does not happen within `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        wanted = version
        with contextlib.suppress(Exception):
            wanted = version or champion(config)
        states = [_ready(config.replica_url(name)) for name in REPLICAS]
        if all(
            s and s.get("model_version") == wanted and s["prediction_log"].get("state") == "up"
            for s in states
        ) and (not whole or all(_whole(config, name) for name in REPLICAS)):
            return time.monotonic() - started
        time.sleep(0.25)
    return limit + 1


def _rss(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _role(pid: int) -> str:
    """A process's part, in words, from its command line."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
    except OSError:
        return "gone"
    for marker, role in (
        ("spawn_main", "uvicorn worker"),
        ("resource_tracker", "resource tracker"),
        ("src.loop.writer_process", "log writer"),
        ("uvicorn", "uvicorn supervisor"),
    ):
        if marker in command:
            return role
    return command.split("\0")[0].rsplit("/", 1)[-1]


def memory(config: StackConfig) -> dict[str, float]:
    """RSS (MiB) of every process of the stack, by name and pid, PostgreSQL's too."""
    out: dict[str, float] = {}
    for name, entry in config.state()["processes"].items():
        stack = [entry["pid"]]
        while stack:
            pid = stack.pop()
            if (rss := _rss(pid)) is not None:
                out[f"{name}:{pid}:{_role(pid)}"] = round(rss, 1)
            stack.extend(_children(pid))
    for pid in _postgres_pids():
        if (rss := _rss(pid)) is not None:
            out[f"postgres:{pid}"] = round(rss, 1)
    return out


def drops(config: StackConfig) -> dict[str, int]:
    """Rows the log dropped and counted so far, by reason (the log_drops table)."""
    try:
        rows = _sql(config, "SELECT reason, SUM(rows) FROM log_drops GROUP BY reason")
    except Exception:  # the database stalled: read again at the next boundary
        return {}
    return {reason: int(total) for reason, total in rows}


def monitor_runs(config: StackConfig, since: float, until: float) -> list[str]:
    """The monitoring job's runs that started in [since, until), each in a few words."""
    path = config.root / "monitor.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        run = json.loads(line)
        if not since <= run["started"] < until:
            continue
        if run.get("code") == 0:
            said = (run.get("agent_monitor", {}).get("out") or [""])[-1]
            plan = "; ".join(said.split("; ")[:2])  # "status: ...; actions: ..."
            out.append(f"monitor: plan executed ({plan})")
        else:
            step = run.get(run.get("step", ""), {})
            why = (step.get("err") or [run.get("error", "")])[-1] if step else run.get("error")
            out.append(f"monitor: {run.get('step')} exit {run.get('code')}: {str(why)[:100]}")
    return out


def agent_events(config: StackConfig, since: float, until: float) -> list[str]:
    rows = _sql(
        config,
        "SELECT ts, kind, reason FROM model_events WHERE kind LIKE 'act_%' OR kind IN "
        "('executed', 'promoted', 'forced', 'rolled_back', 'refused', 'refused_to_serve') "
        "ORDER BY id",
    )
    out = []
    for ts, kind, reason in rows:
        moment = ts.timestamp()
        if since <= moment < until and kind != "act_intent":
            reason = str(reason or "").replace(f"{ROOT}/", "")
            out.append(f"{kind}: {reason[:140]}" if reason else kind)
    return out


@dataclass
class Window:
    fault: Fault
    started: float
    acted: float = 0.0
    ended: float = 0.0  # the next window's start
    did: str = ""
    recovered_seconds: float = 0.0
    drops_before: dict[str, int] = field(default_factory=dict)
    drops_after: dict[str, int] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)  # RSS at the window's start


# --- the agent must act ---------------------------------------------------------------------------


def _last_move(config: StackConfig) -> float | None:
    rows = _sql(
        config,
        "SELECT max(ts) FROM model_events WHERE kind IN ('promoted', 'rolled_back', 'forced')",
    )
    return rows[0][0].timestamp() if rows and rows[0][0] else None


def _acts_since(config: StackConfig, since: float) -> list[dict[str, Any]]:
    """The registry's journal since `since`: every act of the agent and every move."""
    rows = _sql(
        config,
        "SELECT ts, kind, version, reason, details FROM model_events WHERE ts >= :since "
        "AND (kind LIKE 'act_%' OR kind IN ('executed', 'promoted', 'rolled_back', "
        "'refused', 'registered', 'challenger')) ORDER BY id",
        {"since": datetime.fromtimestamp(since, UTC)},
    )
    return [
        {
            "after_s": round(ts.timestamp() - since, 1),
            "kind": kind,
            "version": version,
            "reason": str(reason or "").replace(f"{ROOT}/", "")[:160],
            "details": json.loads(details) if details else {},
        }
        for ts, kind, version, reason, details in rows
    ]


def _pages_since(config: StackConfig, since: float) -> list[dict[str, Any]]:
    """What the agent sent to the receiver (ALERT_WEBHOOK_URL) since `since`."""
    path = config.root / "alerts.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        entry = json.loads(line)
        if entry["path"] == "/agent" and entry["received"] >= since:
            labels = entry["body"].get("commonLabels", {})
            out.append(
                {"after_s": round(entry["received"] - since, 1), "action": labels.get("action")}
            )
    return out


def _retrainings_judged(acts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent's retrainings the gate has judged (or that ended otherwise), in order."""
    return [
        act
        for act in acts
        if act["kind"] in ("act_done", "act_skipped", "act_failed")
        and act["details"].get("action") == "trigger_retraining"
    ]


def _swap_seen(
    config: StackConfig, version: str, shift_at: float, acts: list[dict[str, Any]]
) -> float | None:
    """Seconds from the registry's move to `version` until every replica serves it; None if
    it did not move there, or the replicas did not follow within 90 s."""
    moved = [a["after_s"] for a in acts if a["kind"] == "promoted" and a["version"] == version]
    if not moved or _serving_everywhere(config, version, 90) > 90:
        return None
    return round(time.time() - shift_at - moved[-1], 1)


def agent_phase(
    config: StackConfig, traffic: Traffic, shifted: tuple[list[dict[str, Any]], list[int]]
) -> dict[str, Any]:
    """Traffic shifts (one input's distribution moves, the labels of one segment flip); the
    monitoring job must see it, the agent page once and retrain, the gate judge, the service
    swap (or keep its champion if the challenger is worse). Waits for the cooldown of the
    faults' manual moves first, so the agent's own are not held back by them."""
    cooldown = float(service_env(config)["AGENT_COOLDOWN_HOURS"]) * 3600
    moved = _last_move(config)
    if moved is not None:
        time.sleep(max(0.0, moved + cooldown + 1 - time.time()))
    champion_before = champion(config)
    shift_at = time.time()
    traffic.shifted = shifted
    _say(
        f"the agent must act: traffic shifted (census story, seed {SHIFT_SEED}); it has "
        f"{AGENT_LIMIT:.0f} s"
    )
    judged: list[dict[str, Any]] = []
    while time.time() - shift_at < AGENT_LIMIT and not judged:
        time.sleep(2.0)
        with contextlib.suppress(Exception):
            judged = _retrainings_judged(_acts_since(config, shift_at))
    _say(f"  the agent's retraining: {judged[0]['reason'] if judged else 'not judged in time'}")
    # One more monitoring run on the new traffic, so the report shows the plan after the act
    # (and, if the gate refused, the agent may retrain again on the labels that came since).
    time.sleep(float(config.monitor_every) + 5)
    acts = _acts_since(config, shift_at)
    after = champion(config)
    return {
        "shift_at": shift_at,
        "ended": time.time(),
        "champion_before": champion_before,
        "champion_after": after,
        "swapped_everywhere_after_s": (
            None if after == champion_before else _swap_seen(config, after, shift_at, acts)
        ),
        "retraining": (_retrainings_judged(acts) or [None])[-1],
        "acts": acts,
        "pages": _pages_since(config, shift_at),
    }


def add_agent_phase(
    report: dict[str, Any],
    config: StackConfig,
    acting: dict[str, Any],
    traffic: Traffic,
    logged: set[str],
) -> None:
    """The phase's figures, goals and invariants into the report."""
    start, end = acting["shift_at"], acting["ended"]
    mine = [a for a in traffic.answers if start <= a.at < end]
    answered = [pid for a in mine if a.status == 200 for pid in a.ids]
    done = [a for a in acting["acts"] if a["kind"] == "act_done"]
    keys = [(a["details"].get("plan"), a["details"].get("action")) for a in done]
    pages = [p for p in acting["pages"] if p["action"] == "page_oncall"]
    retraining = acting["retraining"] or {}
    outcome = (retraining.get("details") or {}).get("outcome", {}).get("result")
    acting.update(
        requests=len(mine),
        fives=sum(1 for a in mine if a.status is not None and a.status >= 500),
        connection_errors=sum(1 for a in mine if a.status is None),
        rows_answered=len(answered),
        rows_logged=sum(1 for pid in answered if pid in logged),
        retraining_result=outcome,
    )
    report["agent"] = acting
    report["invariants"]["every act of the agent journaled once"] = len(keys) == len(set(keys))
    report["goals"].update(
        {
            "the agent paged once for the shift": len(pages) == 1,
            "the agent retrained and the gate judged the challenger": outcome
            in ("promoted", "refused"),
            "the service swapped to the promoted challenger, or kept its champion": (
                outcome == "refused"
                or (outcome == "promoted" and acting["swapped_everywhere_after_s"] is not None)
            ),
            "0 5xx and 0 connection errors across the shift and the swap": acting["fives"] == 0
            and acting["connection_errors"] == 0,
        }
    )


# --- the run --------------------------------------------------------------------------------------


def prepare_models(config: StackConfig) -> dict[str, str]:
    """Two more versions in the stack's registry: a good challenger, and one that fails
    verification (trained, registered, then its model.pkl corrupted in the store)."""
    versions = {}
    for name, seed in (("challenger", 7), ("broken", 11)):
        folder = config.root / f"set-{name}"
        subprocess.run(
            [
                *(PYTHON, "-m", "src.train", "--outdir", str(folder)),
                *("--trials", "0", "--seed", str(seed), "--no-register"),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        done = _registry(config, "register", str(folder), "--json")
        if done.returncode != 0:
            raise SystemExit(f"soak: registering the {name} failed: {done.stderr}")
        versions[name] = json.loads(done.stdout)["result"].split(":")[0]
    store = Path(service_env(config)["REGISTRY_STORE"])
    (store / versions["broken"] / "model.pkl").write_bytes(b"not a model")
    return versions


def load_rows() -> dict[str, tuple[list[dict[str, Any]], list[int]]]:
    """adult.test's rows as clients send them (never trained on), and their labels; and the
    same rows shifted as the demo shifts them (an older population whose income line moved:
    src/dataset/adult.py), seeded."""
    import numpy as np

    from src.dataset.adult import census_source

    source = census_source(ROOT / "data" / "raw" / "adult.test")
    picked = source.features.sample(5000, random_state=0).index.to_numpy()
    sample = source.features.iloc[picked].reset_index(drop=True)
    labels = source.labels[picked]
    moved, moved_labels = source.shift(sample, labels, np.random.default_rng(SHIFT_SEED))
    return {
        "healthy": (source.requests(sample), [int(v) for v in labels]),
        "shifted": (source.requests(moved), [int(v) for v in moved_labels]),
    }


def run_soak(config: StackConfig, minutes: float) -> dict[str, Any]:
    scale = min(1.0, minutes / 10)
    scrape = scrape_seconds()
    ctx: dict[str, Any] = {
        # Long enough for PredictionLogBehind: its threshold, a scrape and an evaluation, and
        # the same again so that the alert holds across two evaluations.
        "stall": max(BEHIND_AFTER + 4 * scrape, 20 * scale),
        "burst": max(6.0, 30 * scale),
        # A replica held down past two scrapes and an evaluation: ReplicaDown (up == 0) must see
        # it (held 2 s, it fired in one soak and not in the next).
        "hold": max(2 * scrape + 1, 5 * scale),
    }
    _say("training and registering a challenger and a broken set")
    ctx.update(prepare_models(config))
    ctx["champion"] = champion(config)
    rows = load_rows()
    traffic = Traffic(config, *rows["healthy"])
    # The whole run's event time ends an hour ago at the latest (every hour of it can be
    # judged, none is ahead of the clock): the faults, the agent's phase at its longest (the
    # cooldown, its limit, one more monitoring run) and a margin.
    cooldown = float(service_env(config)["AGENT_COOLDOWN_HOURS"]) * 3600
    phase = cooldown + AGENT_LIMIT + config.monitor_every + 120
    traffic.base = traffic.started - (minutes * 60 + phase + 300) * TIME_SCALE - 3600
    labeler = Labeler(config, traffic)
    alerts = Alerts(config)
    ctx.update(traffic=traffic, labeler=labeler)
    warmup = max(10.0, 30 * scale)
    slot = max(10.0, (minutes * 60 - warmup - 20) / len(FAULTS))
    traffic.start()
    labeler.start()
    alerts.start()
    _say(
        f"traffic at {RATE:.0f} requests/s; warm-up {warmup:.0f} s, then a fault every {slot:.0f} s"
    )
    time.sleep(warmup)
    memory_start = memory(config)
    windows: list[Window] = []
    for fault in FAULTS:
        window = Window(fault, time.time(), drops_before=drops(config), memory=memory(config))
        _say(
            f"fault {len(windows) + 1}/{len(FAULTS)}: {fault.name}; so far "
            f"{len(traffic.answers):,} requests, {sum(len(a.ids) for a in traffic.answers):,} rows"
        )
        window.did = fault.act(config, ctx)
        window.acted = time.time()
        # From the fault's blow (a kill) or the end of its injection (a stall, a restart).
        origin = ctx.pop("fault_at", time.monotonic())
        _serving_everywhere(config, None, 90, whole=True)  # or gives up after 90 s
        window.recovered_seconds = time.monotonic() - origin
        _say(f"  {window.did}; recovered in {window.recovered_seconds:.1f} s")
        time.sleep(max(2.0, window.started + slot - time.time()))
        window.drops_after = drops(config)
        windows.append(window)
    for before, after in itertools.pairwise(windows):
        before.ended = after.started
    windows[-1].ended = time.time()
    acting = agent_phase(config, traffic, rows["shifted"])
    _say("faults done; traffic goes on until every alert has resolved (at most 90 s)")
    at_least, at_most = time.monotonic() + 10, time.monotonic() + 90
    while time.monotonic() < at_most and (time.monotonic() < at_least or alerts.seen):
        time.sleep(1)
    traffic.finish()
    labeler.finish()
    memory_end = memory(config)
    alerts.finish()
    _say("traffic stopped; waiting for every replica's log to be written")
    drained = _drain(config)
    report = _report(
        config, ctx, traffic, labeler, alerts, windows, memory_start, memory_end, drained
    )
    add_agent_phase(report, config, acting, traffic, _logged_ids(config))
    return report


def _drain(config: StackConfig, limit: float = 120) -> bool:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        states = [_ready(config.replica_url(n)) for n in REPLICAS]
        if all(s and s["prediction_log"].get("buffered_bytes", 0) == 0 for s in states):
            return True
        time.sleep(0.5)
    return False


def _logged_ids(config: StackConfig) -> set[str]:
    return {r[0] for r in _sql(config, "SELECT prediction_id FROM predictions")}


def _notifications(config: StackConfig) -> list[dict[str, Any]]:
    """What the receiver got from Alertmanager: each alert's status and when it arrived."""
    path = config.root / "alerts.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        entry = json.loads(line)
        if entry["path"] != "/alerts":
            continue
        for alert in entry["body"].get("alerts", []):
            out.append(
                {
                    "alert": alert["labels"]["alertname"],
                    "status": alert["status"],
                    "received": entry["received"],
                }
            )
    return out


def _window_figures(
    w: Window,
    answers: list[Answer],
    label_requests: list[tuple[float, int, int | None]],
    logged: set[str],
    alerts: list[dict[str, Any]],
    notified: list[dict[str, Any]],
    scrape: float,
) -> dict[str, Any]:
    mine = [a for a in answers if w.started <= a.at < w.ended]
    answered = [pid for a in mine if a.status == 200 for pid in a.ids]
    fired = [
        {
            "alert": e["alert"],
            "on": e["on"],
            "firing_after_s": round(e["firing"] - w.started, 1) if "firing" in e else None,
            "resolved_after_s": round(e["resolved"] - w.started, 1) if "resolved" in e else None,
        }
        for e in alerts
        if w.started <= e.get("firing", e["pending"]) < w.ended
    ]
    budget = w.fault.alert_after + 2 * scrape
    expected_fired = all(
        any(f["alert"] == name and f["firing_after_s"] is not None for f in fired)
        for name in w.fault.expected_alerts
    )
    expected_in_time = all(
        any(f["alert"] == name and (f["firing_after_s"] or 1e9) <= budget for f in fired)
        for name in w.fault.expected_alerts
    )
    expected_resolved = all(
        any(f["alert"] == name and f["resolved_after_s"] is not None for f in fired)
        for name in w.fault.expected_alerts
    )
    labels = [r for r in label_requests if w.started <= r[0] < w.ended]
    fives = [a for a in mine if a.status is not None and a.status >= 500]
    return {
        "fault": w.fault.name,
        "did": w.did,
        "window_s": round(w.ended - w.started, 1),
        "requests": len(mine),
        "2xx": sum(1 for a in mine if a.status is not None and 200 <= a.status < 300),
        "4xx": sum(1 for a in mine if a.status is not None and 400 <= a.status < 500),
        "5xx": len(fives),
        "5xx_at_s": [round(a.at - w.started, 1) for a in fives],
        "connection_errors": sum(1 for a in mine if a.status is None),
        "connection_errors_at_s": [
            [round(a.at - w.started, 1), a.error] for a in mine if a.status is None
        ],
        "rows_answered": len(answered),
        "rows_logged": sum(1 for pid in answered if pid in logged),
        "rows_dropped_counted": {
            k: v - w.drops_before.get(k, 0)
            for k, v in w.drops_after.items()
            if v - w.drops_before.get(k, 0)
        },
        "alerts_expected": list(w.fault.expected_alerts),
        "alerts": fired,
        "alertmanager": [
            {**n, "after_s": round(n["received"] - w.started, 1)}
            for n in notified
            if w.started <= n["received"] < w.ended
        ],
        "expected_alerts_fired": expected_fired,
        "expected_alerts_in_time": expected_in_time,
        "alert_budget_s": budget,
        "expected_alerts_resolved": expected_resolved,
        "feedback": {
            "requests": len(labels),
            "labels": sum(n for _, n, status in labels if status == 200),  # taken
            "statuses": {
                str(status): sum(1 for _, _, s in labels if s == status)
                for status in sorted({s for _, _, s in labels}, key=str)
            },
        },
        "recovered_s": round(w.recovered_seconds, 1),
    }


def _report(
    config: StackConfig,
    ctx: dict[str, Any],
    traffic: Traffic,
    labeler: Labeler,
    alerts: Alerts,
    windows: list[Window],
    memory_start: dict[str, float],
    memory_end: dict[str, float],
    drained: bool,
) -> dict[str, Any]:
    logged = _logged_ids(config)
    answers = traffic.answers
    scrape = scrape_seconds()
    notified = _notifications(config)
    faults = [
        {
            **_window_figures(w, answers, labeler.requests, logged, alerts.all(), notified, scrape),
            "agent": monitor_runs(config, w.started, w.ended)
            + agent_events(config, w.started, w.ended),
        }
        for w in windows
    ]
    answered = [pid for a in answers if a.status == 200 for pid in a.ids]
    dropped = drops(config)
    silent = len(answered) - sum(1 for pid in answered if pid in logged) - sum(dropped.values())
    registered = {r[0] for r in _sql(config, "SELECT version FROM model_versions")}
    served = {a.version for a in answers if a.version}
    changes = {
        key: round(memory_end[key] / start - 1, 3)
        for key, start in memory_start.items()
        if key in memory_end and start > 0
    }
    # The goal is the project's own processes; the tools' (Prometheus grows its in-memory head
    # block by design until it compacts, every two hours) are shown beside, not counted.
    flat = {k: v for k, v in changes.items() if k.split(":")[0] not in THIRD_PARTY}
    tools = {k: v for k, v in changes.items() if k.split(":")[0] in THIRD_PARTY}
    invariants = {
        "rows answered = rows logged + rows dropped and counted (nothing lost silently)": silent
        <= 0,
        "every answer came from a registered version": served <= registered,
        "the broken model was never served": ctx["broken"] not in served,
        "every request was answered or refused (no answer lost in the log's drain)": drained,
        # A fault whose alert never comes would pass for a fault the alerting caught.
        "every alert a fault expects fired": all(f["expected_alerts_fired"] for f in faults),
    }
    goals = {
        "0 rows lost silently": silent <= 0,
        # A fault's own seconds: from its blow until 5 s after every replica served again.
        "0 5xx or connection errors outside a fault's own seconds (each one named)": all(
            t <= f["recovered_s"] + 5
            for f in faults
            for t in f["5xx_at_s"] + [t for t, _ in f["connection_errors_at_s"]]
        ),
        "each fault's alert fires within 2 scrape intervals (after its own threshold)": all(
            f["expected_alerts_in_time"] for f in faults
        ),
        "each fault's alert resolves after recovery": all(
            f["expected_alerts_resolved"] for f in faults
        ),
        "the broken promoted model is never served": ctx["broken"] not in served,
        f"every replica serves the champion again within {RECOVERY_GOAL:.0f} s": all(
            f["recovered_s"] <= RECOVERY_GOAL for f in faults
        ),
        "memory flat: each of the project's processes within 10% of its RSS after warm-up": all(
            abs(v) <= MEMORY_GOAL for v in flat.values()
        ),
    }
    return {
        "minutes": round((windows[-1].ended - windows[0].started) / 60 + 0.5, 1),
        "rate_rps": RATE,
        "scrape_interval_s": scrape,
        "faults": faults,
        "totals": {
            "requests": len(answers),
            "rows_answered": len(answered),
            "rows_logged": sum(1 for pid in answered if pid in logged),
            "rows_dropped_counted": dropped,
            "rows_lost_silently": max(silent, 0),
            "labels_sent": labeler.sent,
            "labels_taken": labeler.stored,
            "labels_failed": labeler.failed,
            "versions_served": sorted(served),
            "champion": ctx["champion"],
            "broken": ctx["broken"],
            "challenger": ctx["challenger"],
        },
        "memory_mib": {
            "after_warmup": memory_start,
            "end": memory_end,
            "change": flat,
            "tools_change": tools,
            "largest_step": _largest_steps(windows, memory_end, changes),
        },
        "invariants": invariants,
        "goals": goals,
    }


def _largest_steps(
    windows: list[Window], memory_end: dict[str, float], keys: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """For each process alive from warm-up to the end: its largest rise in RSS between two
    samples (each window's start, then the end), and the fault whose window it rose in. A leak
    rises in every window; a step in one window has a cause there (a model loaded, a burst)."""
    out = {}
    for key in keys:
        series = [w.memory.get(key) for w in windows] + [memory_end[key]]
        rises = [
            (after - before, w.fault.name)
            for w, before, after in zip(windows, series, series[1:], strict=False)
            if before is not None and after is not None
        ]
        if rises:
            rise, during = max(rises)
            out[key] = {"mib": round(rise, 1), "during": during}
    return out


def _memory_rows(report: dict[str, Any]) -> list[str]:
    memory = report["memory_mib"]
    rows = [
        "| process | RSS after warm-up | at the end | change | largest rise, in the window of |",
        "|---|---:|---:|---:|---|",
    ]
    for key, change in memory["change"].items():
        step = memory["largest_step"].get(key, {})
        name, pid, role = key.split(":", 2)
        rows.append(
            f"| {name}: {role} ({pid}) | {memory['after_warmup'][key]:.1f} MiB | "
            f"{memory['end'][key]:.1f} MiB | {change:+.1%} | "
            f"{step.get('mib', 0):+.1f} MiB, {step.get('during', '-')} |"
        )
    tools = memory.get("tools_change", {})
    if tools:
        rows.append("")
        rows.append(
            "The tools beside them, not held to the goal (Prometheus keeps its newest samples in "
            "an in-memory head block, compacted every two hours, so it grows through a soak):"
        )
        rows.append("")
        rows.append("| tool | RSS after warm-up | at the end | change |")
        rows.append("|---|---:|---:|---:|")
        for key, change in tools.items():
            rows.append(
                f"| {key} | {memory['after_warmup'][key]:.1f} MiB | {memory['end'][key]:.1f} MiB "
                f"| {change:+.1%} |"
            )
    gone = [k for k in memory["after_warmup"] if k not in memory["end"]]
    if gone:
        rows.append("")
        by_part = dict.fromkeys(k.split(":")[0] for k in gone)
        rows.append(
            f"Not compared: {len(gone)} processes a fault killed or restarted (their successors "
            "started later), of "
            + ", ".join(f"{p} ({sum(k.startswith(p + ':') for k in gone)})" for p in by_part)
            + "."
        )
    return rows


def _named_errors(faults: list[dict[str, Any]]) -> list[str]:
    """Every 5xx and connection error, by fault, with when it came (s after the fault began)."""
    lines = []
    for f in faults:
        named = [f"5xx at {t:g} s" for t in f["5xx_at_s"]] + [
            f"connection error at {t:g} s ({error})" for t, error in f["connection_errors_at_s"]
        ]
        if named:
            lines.append(f"- {f['fault']}: " + "; ".join(named))
    return ["Errors, each one:", "", *lines, ""] if lines else []


def _agent_cell(said: list[str]) -> str:
    """What the agent and the registry did in a window, each kind of act once with its count;
    the executor's own bookkeeping ("executed: <plan>") left to the JSON."""
    kept = [line for line in said if not line.startswith("executed")]
    counts = dict.fromkeys(kept, 0)
    for line in kept:
        counts[line] += 1
    return "; ".join(f"{line} (x{n})" if n > 1 else line for line, n in counts.items()) or "-"


def _alert_cells(fault: dict[str, Any]) -> str:
    """Each alert of a fault's window once: when it first fired and last resolved (seconds after
    the fault began); the expected ones marked, and those that never came."""
    cells = []
    names = dict.fromkeys([*fault["alerts_expected"], *(a["alert"] for a in fault["alerts"])])
    for name in names:
        mine = [a for a in fault["alerts"] if a["alert"] == name]
        firing = [a["firing_after_s"] for a in mine if a["firing_after_s"] is not None]
        resolved = [a["resolved_after_s"] for a in mine if a["resolved_after_s"] is not None]
        if not firing and name not in fault["alerts_expected"]:
            continue  # pending only, never fired
        when = f"fired {min(firing):g} s" if firing else "never fired"
        if firing:
            when += f", resolved {max(resolved):g} s" if resolved else ", not resolved"
        cells.append(f"{'**' + name + '**' if name in fault['alerts_expected'] else name} {when}")
    return "; ".join(cells) or "-"


def _agent_lines(acting: dict[str, Any] | None) -> list[str]:
    """The agent-acting phase: what the agent did, each act's time after the shift began."""
    if not acting:
        return []
    seconds = acting["ended"] - acting["shift_at"]
    lines = [
        "",
        f"The agent must act: traffic shifted at the end of the faults (an older population "
        f"whose income line moved, seed {SHIFT_SEED}). In the {seconds:.0f} s "
        f"after: {acting['requests']:,} requests, {acting['rows_answered']:,} rows answered, "
        f"{acting['rows_logged']:,} logged; {acting['fives']} 5xx, "
        f"{acting['connection_errors']} connection errors. Champion "
        f"{acting['champion_before']} before, {acting['champion_after']} after"
        + (
            f" (served by every replica {acting['swapped_everywhere_after_s']} s after the move)."
            if acting["swapped_everywhere_after_s"] is not None
            else "."
        ),
        "",
        "| after the shift | event | version | what |",
        "|---:|---|---|---|",
    ]
    for act in acting["acts"]:
        if act["kind"] == "act_intent":
            continue
        lines.append(
            f"| {act['after_s']:g} s | {act['kind']} | {act['version']} | {act['reason']} |"
        )
    pages = ", ".join(f"{p['action']} at {p['after_s']:g} s" for p in acting["pages"]) or "none"
    lines += ["", f"Sent to the receiver (ALERT_WEBHOOK_URL): {pages}."]
    return lines


def markdown(report: dict[str, Any]) -> str:
    head = (
        "| fault | requests: 2xx / 4xx / 5xx / conn. errors | rows answered / logged / "
        "dropped and counted | labels taken (label requests answered 5xx, then tried again) | "
        "alerts (**expected**), after the fault began | agent and registry | recovered |\n"
        "|---|---|---|---|---|---|---:|\n"
    )
    rows = []
    for f in report["faults"]:
        dropped = ", ".join(f"{k} {v:,}" for k, v in f["rows_dropped_counted"].items()) or "0"
        agent = _agent_cell(f["agent"])
        feedback = f["feedback"]
        fives = sum(n for status, n in feedback["statuses"].items() if status.startswith("5"))
        rows.append(
            f"| {f['fault']} | {f['requests']:,}: {f['2xx']:,} / {f['4xx']:,} / {f['5xx']} / "
            f"{f['connection_errors']} | {f['rows_answered']:,} / {f['rows_logged']:,} / "
            f"{dropped} | {feedback['labels']:,} ({fives}) | {_alert_cells(f)} | "
            f"{agent} | {f['recovered_s']} s |"
        )
    totals = report["totals"]
    lines = [
        f"Soak of {report['minutes']} minutes, {report['rate_rps']:.0f} requests/s offered "
        f"(5% invalid, 15% batches of {BATCH_ROWS} rows), scrape every "
        f"{report['scrape_interval_s']:g} s.",
        "",
        head + "\n".join(rows),
        "",
        f"Whole run: {totals['requests']:,} requests, {totals['rows_answered']:,} rows answered, "
        f"{totals['rows_logged']:,} logged, {sum(totals['rows_dropped_counted'].values()):,} "
        f"dropped and counted, **{totals['rows_lost_silently']:,} lost silently**; labels "
        f"{totals['labels_taken']:,} of {totals['labels_sent']:,} taken.",
        "",
        *_named_errors(report["faults"]),
        "Rows are counted in the window their request was sent; drops in the window they were "
        "found. Rows answered in the last moment before a kill show as not logged in the window "
        "before it, and as dropped (worker_died) in the kill's own.",
        "",
        *[f"- {'met   ' if ok else 'MISSED'} {goal}" for goal, ok in report["goals"].items()],
        *[
            f"- invariant {'held' if ok else 'FAILED'}: {i}"
            for i, ok in report["invariants"].items()
        ],
        *_agent_lines(report.get("agent")),
        "",
        "Memory (RSS) of each process that lived through the run:",
        "",
        *_memory_rows(report),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    from src.fileio import write_text_atomic

    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    if minutes <= 0:
        raise SystemExit(f"soak: SOAK_MINUTES must be positive, got {minutes:g}")
    config = StackConfig.from_env()
    started_here = not config.state().get("processes")
    if started_here:  # the soak's own stack, stopped again at the end
        _say("the stack is down: bringing it up (python -m ops.stack up)")
        try:
            up(config)
        except BaseException:
            down(config)
            raise
    try:
        wait_ready(config.lb_url + "/ready")
        report = run_soak(config, minutes)
    finally:
        if started_here:
            down(config)
    OUT.mkdir(parents=True, exist_ok=True)
    write_text_atomic(OUT / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(OUT / "report.md", markdown(report))
    print(markdown(report))
    failed = [name for name, ok in report["invariants"].items() if not ok]
    for name in failed:
        print(f"soak: invariant FAILED: {name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
