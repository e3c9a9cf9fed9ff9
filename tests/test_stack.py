"""The stack's configuration (issue 26): deploy/compose.yaml and `make stack` run the same
services with the same files, and each file is valid for the real tool that reads it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ops.stack import REPLICAS, TOOLS, StackConfig, _configs, local_names, scrape_seconds
from src.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_the_services_the_process_stack_runs() -> None:
    services = set(_compose()["services"])
    stack = {f"replica-{name}" for name in REPLICAS} | set(TOOLS) - {"pg_lsclusters"}
    stack = {name.removeprefix("prometheus-") for name in stack}  # Debian's package names
    assert stack | {"postgres", "receiver", "monitor", "register"} == services


def test_every_address_in_the_configuration_is_a_compose_service_at_its_port() -> None:
    compose = _compose()["services"]
    for address in local_names(StackConfig()):
        if address.startswith("/"):  # a path: mounted in compose
            continue
        host, port = address.split(":")
        if host == "0.0.0.0":
            assert f"127.0.0.1:{port}:{port}" in compose["haproxy"]["ports"]
            continue
        assert host in compose, f"{address} names no compose service"
        command = " ".join(compose[host].get("command", []))
        published = " ".join(compose[host].get("ports", []))
        assert f"--port {port}" in command or f":{port}" in published, address


def test_compose_mounts_the_files_the_process_stack_reads() -> None:
    for service in _compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source == "../artifacts":  # what `make train` writes: absent in a fresh clone
                continue
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose mounts {source}, which is missing"
    mounted = {
        Path(v.split(":")[0]).name
        for s in _compose()["services"].values()
        for v in s.get("volumes", [])
    }
    assert {"haproxy.cfg", "prometheus.yml", "alertmanager.yml", "rules.yml"} <= mounted


def test_compose_gives_the_services_the_settings_the_process_stack_gives_them(
    tmp_path: Path,
) -> None:
    environment = _compose()["x-service"]["environment"]
    (tmp_path / "token").write_text("t")
    config = StackConfig(root=tmp_path)
    (tmp_path / "pids.json").write_text('{"database_url": "postgresql://x"}')
    from ops.stack import service_env

    # PREDICTION_LOG_DIR: the image's own default (docker/Dockerfile).
    assert set(service_env(config)) - {"PREDICTION_LOG_DIR"} <= set(environment)
    for secret in ("SERVICE_TOKEN",):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", environment[secret]), secret
    assert "${POSTGRES_PASSWORD:?" in environment["DATABASE_URL"]


def test_an_empty_artifacts_dir_means_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose cannot unset the image's ARTIFACTS_DIR: empty must not mean the current folder.
    monkeypatch.setenv("ARTIFACTS_DIR", "")
    assert Settings().artifacts_dir is None


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install {TOOLS.get(name, name)})")
    return found


def test_the_filled_configuration_is_valid_for_haproxy_prometheus_and_alertmanager(
    tmp_path: Path,
) -> None:
    paths = _configs(StackConfig(root=tmp_path))
    checks = [
        [_tool("haproxy"), "-c", "-f", str(paths["haproxy.cfg"])],
        [_tool("promtool"), "check", "config", str(paths["prometheus.yml"])],
        [_tool("amtool"), "check-config", str(paths["alertmanager.yml"])],
    ]
    for command in checks:
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, f"{command[0]}: {done.stdout}{done.stderr}"
    assert "127.0.0.1:8101" in paths["haproxy.cfg"].read_text()
    assert "replica-a" not in paths["prometheus.yml"].read_text()
    assert scrape_seconds() == 5.0


def test_stopping_a_part_returns_only_when_every_process_of_it_is_gone() -> None:
    """`make stack-down` returned while processes it started still ran (a later `make stack`
    could meet their ports). A part that ignores SIGTERM, with children, is stopped whole."""
    import time

    from ops.stack import group_members, stop_process

    process = subprocess.Popen(
        ["bash", "-c", 'trap "" TERM; sleep 60 & sleep 60 & wait'], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while len(group_members(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(group_members(process.pid)) == 3
    stopped = stop_process({"pid": process.pid}, grace=1.0)
    assert len(stopped) == 3
    assert group_members(process.pid) == []
    process.wait(5)


def test_the_soak_stalls_the_database_long_enough_for_its_alert() -> None:
    """PredictionLogBehind never fired in a 2-minute soak: a 5 s stall against a 3 s threshold
    and a 5 s scrape. The soak reads the rule's threshold and stalls past a scrape and an
    evaluation after it; an expected alert that never fires now fails the soak."""
    from ops.soak import BEHIND_AFTER

    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    behind = next(
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "PredictionLogBehind"
    )
    assert behind["expr"].strip().endswith(f"> {BEHIND_AFTER:g}")
    assert "for" not in behind  # else the stall must outlast it too
