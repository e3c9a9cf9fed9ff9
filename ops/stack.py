"""python -m ops.stack up | down | status: the stack as deployed, as processes on this machine.

- PostgreSQL (Debian's package, scripts/start_postgres.sh), a fresh database for the stack;
- the registry in it, its champion the set in artifacts/, its store in var/stack/registry;
- two replicas of the service, two uvicorn workers each;
- HAProxy in front of them, checking /ready;
- Prometheus scraping every replica with deploy/prometheus/rules.yml, Alertmanager routing its
  alerts to a receiver that records them (ops/receiver.py);
- the monitoring job (ops/monitor_job.py) on a schedule, acting through the agent.

Every process is started in a process group of its own and recorded (var/stack/pids.json);
`down` stops what `up` started, by process id, and PostgreSQL only if `up` started it. The same
configuration files serve deploy/compose.yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PYTHON = sys.executable
STOP_ORDER = ("monitor", "prometheus", "alertmanager", "receiver", "haproxy", "a", "b")
REPLICAS = ("a", "b")


@dataclass(frozen=True)
class StackConfig:
    root: Path = ROOT / "var" / "stack"
    host: str = "127.0.0.1"
    lb_port: int = 8100
    replica_ports: tuple[int, int] = (8101, 8102)
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    receiver_port: int = 9095
    monitor_every: float = 60.0
    database: str = "adult_stack"
    artifacts: Path = ROOT / "artifacts"

    @classmethod
    def from_env(cls) -> StackConfig:
        env = os.environ.get
        return cls(
            root=Path(env("STACK_DIR", str(cls.root))),
            lb_port=int(env("STACK_PORT", cls.lb_port)),
            monitor_every=float(env("STACK_MONITOR_EVERY", cls.monitor_every)),
            artifacts=Path(env("ARTIFACTS", str(cls.artifacts))),
        )

    @property
    def pids(self) -> Path:
        return self.root / "pids.json"

    @property
    def lb_url(self) -> str:
        return f"http://{self.host}:{self.lb_port}"

    def replica_url(self, name: str) -> str:
        return f"http://{self.host}:{self.replica_ports[REPLICAS.index(name)]}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.host}:{self.alertmanager_port}"

    def state(self) -> dict[str, Any]:
        return json.loads(self.pids.read_text()) if self.pids.is_file() else {}


def _say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def _save(config: StackConfig, state: dict[str, Any]) -> None:
    config.pids.write_text(json.dumps(state, indent=2))


def _spawn(config: StackConfig, name: str, command: list[str], env: dict[str, str]) -> dict:
    log = (config.root / "logs" / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopped with everything it started
    )
    return {"pid": process.pid, "command": command, "started": time.time()}


def wait_ready(url: str, seconds: float = 120.0) -> float:
    """Seconds until `url` answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 - loopback
        ):
            if response.status == 200:
                return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"stack: {url} did not answer 200 within {seconds:.0f} s")


def service_env(config: StackConfig) -> dict[str, str]:
    """What the replicas, the registry CLI and the monitoring job share."""
    state = config.state()
    return {
        "DATABASE_URL": state["database_url"],
        "REGISTRY_STORE": str(config.root / "registry"),
        "PREDICTION_LOG_DIR": str(config.root),
        "SERVICE_TOKEN": (config.root / "token").read_text().strip(),
        "MONITOR_LIVE_DIR": str(config.root / "live"),
        "ALERT_WEBHOOK_URL": f"http://{config.host}:{config.receiver_port}/agent",
        "MODEL_POLL_SECONDS": "2",
        "LOG_REQUESTS": "false",
        # The soak compresses time (a second of traffic is a minute of event time, sent as
        # X-Event-Time) so the hourly monitoring has closed hours to judge in minutes; labels
        # count at once.
        "ACCEPT_EVENT_TIME": "true",
        "STATS_LABEL_DELAY_HOURS": "0",
        # The agent's cooldown, compressed alike: 72 s (just over an event hour) instead of 6
        # hours, so a fault's manual promotion and the agent's own moves do not hold each other
        # back for the whole soak.
        "AGENT_COOLDOWN_HOURS": "0.02",
    }


def start_replica(config: StackConfig, name: str) -> dict[str, Any]:
    """One replica: uvicorn with two workers; its metrics folder its own."""
    port = config.replica_ports[REPLICAS.index(name)]
    command = [PYTHON, "-m", "uvicorn", "src.app:app", "--host", config.host, "--port", str(port)]
    command += ["--workers", "2", "--no-access-log", "--log-level", "warning"]
    env = {**service_env(config), "METRICS_DIR": str(config.root / f"metrics-{name}")}
    shutil.rmtree(config.root / f"metrics-{name}", ignore_errors=True)
    return _spawn(config, f"replica-{name}", command, env)


def _fresh_database(url: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def _cluster() -> tuple[str, str]:
    """The version and name of this machine's PostgreSQL cluster (Debian's pg_lsclusters)."""
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
    version, name = listed.stdout.split()[:2]
    return version, name


def _postgres(config: StackConfig, state: dict[str, Any]) -> None:
    online = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
    was_online = "online" in online.stdout
    url = subprocess.run(
        [str(ROOT / "scripts" / "start_postgres.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    state["postgres"] = {"started_by_stack": not was_online}
    state["database_url"] = _fresh_database(url, config.database)
    _save(config, state)


def local_names(config: StackConfig) -> dict[str, str]:
    """deploy/compose.yaml's service addresses, and where this machine's processes listen."""
    return {
        "0.0.0.0:8100": f"{config.host}:{config.lb_port}",
        **{
            f"replica-{name}:8000": f"{config.host}:{port}"
            for name, port in zip(REPLICAS, config.replica_ports, strict=True)
        },
        "alertmanager:9093": f"{config.host}:{config.alertmanager_port}",
        "receiver:9095": f"{config.host}:{config.receiver_port}",
        "/etc/prometheus/rules.yml": str(DEPLOY / "prometheus" / "rules.yml"),
    }


def scrape_seconds() -> float:
    """The stack's scrape (and rule evaluation) interval, as its Prometheus file sets it."""
    for line in (DEPLOY / "stack" / "prometheus.yml").read_text().splitlines():
        if line.strip().startswith("scrape_interval:"):
            return float(line.split(":", 1)[1].strip().removesuffix("s"))
    raise ValueError("deploy/stack/prometheus.yml sets no scrape_interval")


def _configs(config: StackConfig) -> dict[str, Path]:
    """The compose stack's configuration files, its services' names replaced by this machine's
    loopback addresses: the same configuration, run as processes."""
    folder = config.root / "config"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("haproxy.cfg", "prometheus.yml", "alertmanager.yml"):
        text = (DEPLOY / "stack" / name).read_text()
        for compose_name, local in local_names(config).items():
            text = text.replace(compose_name, local)
        paths[name] = folder / name
        paths[name].write_text(text)
    return paths


TOOLS = {
    "haproxy": "haproxy",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "pg_lsclusters": "postgresql",
}


def up(config: StackConfig) -> None:
    if config.state().get("processes"):
        raise SystemExit("stack: already up (make stack-down first)")
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    if missing:
        raise SystemExit(
            f"stack: missing {', '.join(missing)} (apt-get install {' '.join(missing)})"
        )
    if not (config.artifacts / "manifest.json").is_file():
        raise SystemExit(f"stack: no trained set in {config.artifacts} (make train)")
    shutil.rmtree(config.root, ignore_errors=True)
    (config.root / "logs").mkdir(parents=True)
    token = config.root / "token"
    token.write_text(secrets.token_hex(16))
    token.chmod(0o600)
    state: dict[str, Any] = {"processes": {}}
    _postgres(config, state)
    _say(f"PostgreSQL up, database {config.database} fresh")
    registered = subprocess.run(
        [PYTHON, "-m", "src.registry", "register", str(config.artifacts)],
        cwd=ROOT,
        env={**os.environ, **service_env(config)},
        capture_output=True,
        text=True,
    )
    if registered.returncode != 0:
        raise SystemExit(f"stack: registering {config.artifacts} failed: {registered.stderr}")
    _say(registered.stdout.strip())
    paths = _configs(config)
    commands = _commands(config, paths)
    for name in ("a", "b"):
        state["processes"][name] = start_replica(config, name)
        _save(config, state)
    for name in ("a", "b"):
        _say(f"replica {name} ready in {wait_ready(config.replica_url(name) + '/ready'):.1f} s")
    for name, command in commands.items():
        state["processes"][name] = _spawn(config, name, command, {})
        _save(config, state)
    wait_ready(config.lb_url + "/ready")
    wait_ready(config.prometheus_url + "/-/ready")
    wait_ready(config.alertmanager_url + "/-/ready")
    state["processes"]["monitor"] = _spawn(
        config,
        "monitor",
        [
            *(PYTHON, "-m", "ops.monitor_job", "--every", str(config.monitor_every)),
            *("--live", str(config.root / "live"), "--record", str(config.root / "monitor.jsonl")),
        ],
        service_env(config),
    )
    _save(config, state)
    _say(
        f"up: {config.lb_url} (HAProxy) -> replicas {config.replica_url('a')}, "
        f"{config.replica_url('b')}; Prometheus {config.prometheus_url}, Alertmanager "
        f"{config.alertmanager_url}; state and logs in {config.root}"
    )


def _commands(config: StackConfig, paths: dict[str, Path]) -> dict[str, list[str]]:
    alerts = config.root / "alerts.jsonl"
    return {
        "haproxy": ["haproxy", "-db", "-f", str(paths["haproxy.cfg"])],
        "receiver": [
            *(PYTHON, "-m", "ops.receiver"),
            *("--port", str(config.receiver_port), "--out", str(alerts)),
        ],
        "alertmanager": [
            "prometheus-alertmanager",
            f"--config.file={paths['alertmanager.yml']}",
            f"--storage.path={config.root / 'alertmanager'}",
            f"--web.listen-address={config.host}:{config.alertmanager_port}",
            "--cluster.listen-address=",
        ],
        "prometheus": [
            "prometheus",
            f"--config.file={paths['prometheus.yml']}",
            f"--storage.tsdb.path={config.root / 'prometheus'}",
            f"--web.listen-address={config.host}:{config.prometheus_port}",
        ],
    }


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group (zombies are gone for this purpose: only their
    exit status is left)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command, which may hold spaces
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Waits until none of `pids` is alive (reaping our own children); those still alive."""
    deadline = time.monotonic() + seconds
    alive = pids
    while True:
        for pid in alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        alive = [p for p in alive if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_process(entry: dict[str, Any], grace: float = 20.0) -> list[int]:
    """SIGTERM to its process group, SIGKILL after `grace` seconds; returns only when every
    process of the group is gone (the ones it stopped, by pid), or raises naming the ones that
    are not."""
    pid = entry["pid"]
    members = sorted(set(group_members(pid)) | ({pid} if _alive(pid) else set()))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    left = _wait_gone(members, grace)
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for member in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        left = _wait_gone(left, 10.0)
    late = group_members(pid)  # started while we waited (a supervisor's new worker)
    if late:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        left += _wait_gone(late, 10.0)
    if left:
        raise RuntimeError(f"still running after SIGKILL: {left}")
    return members


def down(config: StackConfig) -> None:
    """Stops what `up` started and returns only when every one of those processes is gone."""
    state = config.state()
    processes = state.get("processes", {})
    stopped = 0
    for name in STOP_ORDER:
        if name in processes:
            pids = stop_process(processes[name])
            stopped += len(pids)
            others = f" and {len(pids) - 1} more" if len(pids) > 1 else ""
            _say(f"stopped {name} (pid {processes[name]['pid']}{others})")
    if state.get("postgres", {}).get("started_by_stack"):
        version, name = _cluster()
        subprocess.run(["pg_ctlcluster", version, name, "stop"], check=False)
        _say("stopped PostgreSQL (the stack started it)")
    if config.pids.is_file():
        config.pids.unlink()
    if processes:
        _say(f"down: {stopped} processes stopped, none left running")


def status(config: StackConfig) -> int:
    processes = config.state().get("processes", {})
    if not processes:
        print("stack: down")
        return 1
    for name, entry in processes.items():
        try:
            os.killpg(entry["pid"], 0)
            alive = "up"
        except ProcessLookupError:
            alive = "gone"
        print(f"{name:<13} pid {entry['pid']:<8} {alive}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.stack", description=__doc__)
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    config = StackConfig.from_env()
    if args.action == "up":
        try:
            up(config)
        except BaseException:
            down(config)  # nothing half-started stays behind
            raise
        return 0
    if args.action == "down":
        down(config)
        return 0
    return status(config)


if __name__ == "__main__":
    raise SystemExit(main())
