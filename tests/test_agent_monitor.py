"""The monitoring agent: golden verdicts, the spec's example, the plan's schema, CLI and LLM."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from src import agent_monitor
from src.agent import (
    AgentPlan,
    DriftSummary,
    LLMConfig,
    judge,
    monitor,
    parse_metrics_lines,
)
from tests.conftest import CHALLENGE, DATA

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FAKE_KEY = "fake-llm-key-for-tests"  # not a secret: the stub server checks it comes through
START = datetime(2025, 6, 1, tzinfo=UTC)


def history(
    n: int = 200,
    *,
    step: timedelta = timedelta(hours=1),
    roc: float = 0.90,
    pr: float = 0.70,
    last_roc: float | None = None,
    last_pr: float | None = None,
    latency: list[float] | None = None,
    key: str = "ts",
) -> list[str]:
    """JSON lines: flat healthy values, then the given last values and last latencies."""
    lines = []
    for i in range(n):
        point = {
            key: (START + i * step).isoformat(),
            "roc_auc": roc if i < n - 1 or last_roc is None else last_roc,
            "pr_auc": pr if i < n - 1 or last_pr is None else last_pr,
            "acc": 0.85,
            "latency_p95_ms": 200.0,
            "error_rate": 0.01,
        }
        if latency is not None and i >= n - len(latency):
            point["latency_p95_ms"] = latency[i - (n - len(latency))]
        lines.append(json.dumps(point))
    return lines


def plan_for(lines: list[str], drift: bool | None = False) -> AgentPlan:
    points = parse_metrics_lines(lines, source="test")
    summary = (
        None
        if drift is None
        else DriftSummary(
            overall_drift=drift, threshold=0.2, features={"age": 0.3 if drift else 0.01}
        )
    )
    return monitor(points, summary, now=NOW)


GOLDEN = {
    "healthy": (dict(), False, "healthy", ["do_nothing"]),
    "warn_auc": (dict(last_roc=0.90 * 0.96), False, "warn", ["trigger_retraining"]),
    "warn_latency": (dict(latency=[450, 410]), False, "warn", ["raise_thresholds"]),
    "one_latency_spike": (dict(latency=[390, 900]), False, "healthy", ["do_nothing"]),
    "latency_exactly_400": (dict(latency=[400, 400]), False, "healthy", ["do_nothing"]),
    "critical_auc": (
        dict(last_roc=0.90 * 0.93),
        False,
        "critical",
        ["roll_back_model", "open_incident", "trigger_retraining"],  # stop the harm, then repair
    ),
    "critical_drift_pr": (
        dict(last_pr=0.70 * 0.94),
        True,
        "critical",
        ["open_incident", "trigger_retraining"],
    ),
    "drift_without_pr_loss": (dict(), True, "healthy", ["do_nothing"]),
    "pr_loss_without_drift": (dict(last_pr=0.70 * 0.90), False, "healthy", ["do_nothing"]),
    "auc_drop_exactly_3": (dict(roc=0.80, last_roc=0.776), False, "warn", ["trigger_retraining"]),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_verdicts(case: str) -> None:
    kwargs, drift, status, actions = GOLDEN[case]
    plan = plan_for(history(**kwargs), drift)
    assert plan.status == status
    assert plan.actions == actions
    assert plan.page_oncall is (status == "critical")


def test_the_spec_example_comes_out_as_the_spec_shows() -> None:
    lines = history(last_roc=0.90 * (1 - 0.038), latency=[430, 412])
    plan = plan_for(lines, drift=False)
    assert plan.status == "warn"
    assert plan.actions == ["trigger_retraining", "raise_thresholds"]
    assert plan.findings[0]["roc_auc_drop_pct"] == 3.8
    assert plan.findings[1]["latency_p95_ms"] == 412
    assert plan.findings[2]["drift_overall"] is False
    assert "3.8%" in plan.rationale
    assert plan.page_oncall is False


def test_severity_only_rises() -> None:
    # Warn rules fire too, but the critical one decides.
    plan = plan_for(history(last_roc=0.80, latency=[500, 500]), drift=False)
    assert plan.status == "critical"
    assert plan.rules_fired == ["roc_auc_drop_warn", "latency_p95_warn", "roc_auc_drop_critical"]


def test_margins_and_breach_duration_are_reported() -> None:
    lines = history(n=200, roc=0.90)
    # the last 5 hours at 4% down
    lines = lines[:-5] + [json.dumps({**json.loads(line), "roc_auc": 0.864}) for line in lines[-5:]]
    plan = plan_for(lines, drift=True)
    roc = plan.findings[0]
    assert roc["roc_auc_drop_pct"] == 4.0
    assert roc["margin_to_warn_pct"] == -1.0
    assert roc["margin_to_critical_pct"] == 2.0
    assert roc["breach_hours"] == 4.0
    assert plan.findings[3]["margin_to_critical_with_drift_pct"] == 5.0
    assert plan.findings[2]["top_drifted"] == [{"age": 0.3}]


def test_window_is_seven_days_by_time_not_lines() -> None:
    # Daily points: the 7-day window holds 7 points. A dip 8 days ago must not count.
    lines = history(n=30, step=timedelta(days=1), roc=0.90)
    eight_days_ago = json.loads(lines[-9])
    lines[-9] = json.dumps({**eight_days_ago, "roc_auc": 0.10})
    verdict = judge(parse_metrics_lines(lines, source="t"), None)
    assert verdict.evidence.window_points == 7
    assert verdict.evidence.roc_auc_median == 0.90


def test_hourly_and_daily_histories_agree_on_the_same_story() -> None:
    hourly = plan_for(history(n=200, last_roc=0.85), drift=False)
    daily = plan_for(history(n=20, step=timedelta(days=1), last_roc=0.85), drift=False)
    assert hourly.status == daily.status == "warn"
    assert hourly.findings[0]["roc_auc_drop_pct"] == daily.findings[0]["roc_auc_drop_pct"]


def test_unsorted_lines_are_ordered_by_time() -> None:
    lines = history(last_roc=0.85, latency=[500, 500])
    shuffled = list(reversed(lines))
    assert plan_for(shuffled).model_dump(exclude={"generated_at"}) == plan_for(lines).model_dump(
        exclude={"generated_at"}
    )


def test_short_history_is_said_and_judged() -> None:
    plan = plan_for(history(n=2, last_roc=0.80), drift=False)
    assert plan.findings[5]["history_points_7d"] == 1
    assert "fewer than 3 points" in plan.findings[5]["note"]
    assert plan.status == "critical"  # 0.80 vs 0.90 is an 11% drop even on one point
    single = plan_for(history(n=1), drift=False)
    assert single.status == "healthy"
    assert single.findings[0]["roc_auc_drop_pct"] is None


def test_timestamp_is_accepted_for_ts() -> None:
    assert plan_for(history(key="timestamp", last_roc=0.85)).status == "warn"


def test_plan_yaml_is_valid_against_the_schema() -> None:
    plan = plan_for(history(last_roc=0.85))
    loaded = yaml.safe_load(agent_monitor.plan_yaml(plan))
    assert list(loaded)[:3] == ["status", "findings", "actions"]
    AgentPlan.model_validate(loaded)
    with pytest.raises(ValueError, match="actions"):
        AgentPlan.model_validate({**loaded, "actions": ["reboot_the_cloud"]})


def test_project_files_give_warn() -> None:
    points = agent_monitor.load_metrics(DATA / "metrics_history.jsonl")
    plan = monitor(points, agent_monitor.load_drift(DATA / "drift_latest.json"), now=NOW)
    assert plan.status == "warn"
    assert plan.actions == ["trigger_retraining"]


@pytest.mark.skipif(
    not CHALLENGE.is_dir(), reason="../shared/challenge-data is not beside the project"
)
def test_challenge_files_give_warn() -> None:
    points = agent_monitor.load_metrics(CHALLENGE / "metrics_history.jsonl")
    plan = monitor(points, agent_monitor.load_drift(CHALLENGE / "drift_latest.json"), now=NOW)
    assert plan.status == "warn"
    assert plan.actions == ["trigger_retraining", "raise_thresholds"]
    assert plan.findings[0]["roc_auc_drop_pct"] == 4.6
    assert plan.findings[3]["pr_auc_drop_pct"] == 4.9
    assert plan.findings[3]["margin_to_critical_with_drift_pct"] == 0.1


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_writes_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    code = agent_monitor.main(
        [
            "--metrics",
            str(DATA / "metrics_history.jsonl"),
            "--drift",
            str(DATA / "drift_latest.json"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert yaml.safe_load(out.read_text())["status"] == "warn"
    assert list(tmp_path.iterdir()) == [out]


def test_cli_without_drift_reports_it_unknown(tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    assert (
        agent_monitor.main(["--metrics", str(DATA / "metrics_history.jsonl"), "--out", str(out)])
        == 0
    )
    drift = yaml.safe_load(out.read_text())["findings"][2]
    assert drift["drift_overall"] is None
    assert "unknown" in drift["note"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"ts": "2026-01-01T00:00:00", "roc_auc": 0.9}\n', "test.jsonl:1: pr_auc: Field required"),
        ("\n\nnot json\n", "test.jsonl:3: Invalid JSON"),
        (history(n=3)[0] + "\n" + history(n=3)[1].replace("0.9", "true") + "\n", "test.jsonl:2"),
        ("", "no metrics points"),
    ],
)
def test_cli_bad_metrics_exit_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text(content)
    out = tmp_path / "plan.yaml"
    assert agent_monitor.main(["--metrics", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
    assert not out.exists()


def test_cli_missing_drift_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--metrics", str(DATA / "metrics_history.jsonl"), "--drift", str(tmp_path / "no.json")]
    assert agent_monitor.main([*args, "--out", str(tmp_path / "p.yaml")]) == 2
    assert "no.json: no such file" in capsys.readouterr().err


def test_cli_llm_flag_needs_an_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENT_LLM_BASE_URL", raising=False)
    args = ["--metrics", str(DATA / "metrics_history.jsonl"), "--out", str(tmp_path / "p.yaml")]
    assert agent_monitor.main([*args, "--llm"]) == 2
    assert "AGENT_LLM_BASE_URL" in capsys.readouterr().err


def test_no_network_without_the_flag_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    monkeypatch.delenv("AGENT_LLM_BASE_URL", raising=False)

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network call without --llm")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    args = ["--metrics", str(DATA / "metrics_history.jsonl"), "--out", str(tmp_path / "p.yaml")]
    assert agent_monitor.main(args) == 0


# --- the LLM, against a stub chat-completions server on 127.0.0.1 ------------------------------


class StubLLM(BaseHTTPRequestHandler):
    reply: str = ""
    delay: float = 0.0
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubLLM.seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        time.sleep(StubLLM.delay)
        payload = {"choices": [{"message": {"role": "assistant", "content": StubLLM.reply}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StubLLM.seen, StubLLM.delay = [], 0.0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _llm_plan(url: str, lines: list[str], timeout: float = 5.0) -> AgentPlan:
    points = parse_metrics_lines(lines, source="t")
    config = LLMConfig(base_url=url, model="stub", api_key=FAKE_KEY, timeout=timeout)
    return monitor(points, None, now=NOW, llm=config)


def test_llm_good_reply_writes_the_rationale_within_the_allowed_actions(stub: str) -> None:
    StubLLM.reply = json.dumps(
        {
            "rationale": "AUC is sliding; retrain on last week's data.",
            "status": "warn",
            "extra_actions": ["open_incident", "format_disk"],
        }
    )
    plan = _llm_plan(stub, history(last_roc=0.85))
    assert plan.rationale == "AUC is sliding; retrain on last week's data."
    assert plan.actions == ["open_incident", "trigger_retraining"]  # the safe order
    assert plan.findings[-1]["dropped_actions"] == ["format_disk"]
    request = StubLLM.seen[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == f"Bearer {FAKE_KEY}"
    assert FAKE_KEY not in json.dumps(plan.model_dump())


def test_llm_cannot_lower_the_status(stub: str) -> None:
    StubLLM.reply = json.dumps({"rationale": "All fine.", "status": "healthy", "extra_actions": []})
    plan = _llm_plan(stub, history(last_roc=0.80))
    assert plan.status == "critical"
    assert plan.page_oncall is True
    assert plan.findings[-1]["ignored_lower_status"] == "healthy"


def test_llm_may_raise_the_status(stub: str) -> None:
    StubLLM.reply = json.dumps(
        {"rationale": "Escalate.", "status": "critical", "extra_actions": []}
    )
    plan = _llm_plan(stub, history(last_roc=0.85))
    assert plan.status == "critical"
    assert plan.page_oncall is True


@pytest.mark.parametrize("reply", ["I cannot help with that.", '{"status": "warn"}', "[]"])
def test_llm_garbage_falls_back_to_the_rules(stub: str, reply: str) -> None:
    StubLLM.reply = reply
    plan = _llm_plan(stub, history(last_roc=0.85))
    rules_only = plan_for(history(last_roc=0.85), drift=None)
    assert plan.rationale == rules_only.rationale
    assert plan.status == "warn"
    assert plan.findings[-1]["llm"] == "unavailable; rules-only plan"


def test_llm_timeout_falls_back_to_the_rules(stub: str) -> None:
    StubLLM.reply, StubLLM.delay = json.dumps({"rationale": "late"}), 2.0
    started = time.monotonic()
    plan = _llm_plan(stub, history(last_roc=0.85), timeout=0.5)
    assert time.monotonic() - started < 1.9
    assert plan.findings[-1]["reason"] in ("TimeoutError", "URLError")
    assert plan.rationale != "late"


def test_points_at_the_edge_of_time_do_not_crash() -> None:
    # Found by the API fuzzer: a point in year 1 made "7 days before" overflow.
    line = json.dumps(
        {
            "ts": "0001-01-01T00:00:00Z",
            "roc_auc": 0.9,
            "pr_auc": 0.7,
            "acc": 0.8,
            "latency_p95_ms": 100,
            "error_rate": 0.0,
        }
    )
    plan = plan_for([line, line.replace("0001-01-01", "9999-12-31")])
    assert plan.status == "healthy"
