"""The agent acts: a plan's actions carried out with the guards a careful on-call engineer would
demand, and a journal that makes every act happen once.

- open_incident / page_oncall: POSTed to ALERT_WEBHOOK_URL as Alertmanager's webhook JSON with an
  Idempotency-Key; without a webhook, to stderr and the registry's history;
- roll_back_model: the registry's rollback (the last good champion before this one);
- trigger_retraining: a challenger trained on the training data plus the labelled traffic in the
  log (src/registry/retrain.py), registered, gated, promoted if it passes;
- raise_thresholds: recorded as a recommendation naming the settings to raise: nothing in this
  process can scale the platform, so it does not pretend to.

The journal. A plan is identified by what it says (status, findings, actions, the window it
judged), never by where it came from, so the same plan presented again (the CLI, POST /monitor, a
rewritten file) acts once. Alerts go first, model moves after: a failing retraining can no longer
cost the page. Before each act its intent is recorded, after it its outcome (done, failed with the
error, or skipped with the reason); a plan that failed halfway is resumed by the next execution,
which repeats nothing that was done. Guards: the cooldown (the agent obeys it), and a lock (two
executors never act at once).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from src.agent.plan import AgentPlan
from src.agent.rules import ACTION_NOTES, SEVERITY
from src.errors import ArtifactError, DataError, RefusedError, UnreachableError
from src.registry.core import CHAMPION, Registry

WEBHOOK_TIMEOUT, WEBHOOK_TRIES = 5.0, 3
ALERTS = ("open_incident", "page_oncall")
# The journal's events in the registry's history: one per step, and one per execution.
INTENT, DONE, FAILED, SKIPPED, EXECUTED = (
    "act_intent",
    "act_done",
    "act_failed",
    "act_skipped",
    "executed",
)
JOURNAL = (INTENT, DONE, FAILED, SKIPPED, EXECUTED)
# Exit codes every CLI shares (README: "Exit codes"); a step's failure says which applies.
EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_FAILED = 1, 2, 3, 4
_LOCK_KEY = 0x5ADC0DF
# Where an input came from is not what the plan says: paths and file times stay out of its key.
_PROVENANCE = frozenset({"from", "path", "modified", "default"})


def judged_window(plan: AgentPlan) -> dict[str, Any]:
    """The observations a plan judged (points, time ranges, the drift window), without where
    they were read from."""
    return {
        name: {k: v for k, v in source.items() if k not in _PROVENANCE}
        for name, source in sorted(plan.sources.items())
    }


def fingerprint(plan: AgentPlan) -> str:
    """What makes two plans the same plan: the verdict and the window it judged."""
    key = {
        "status": plan.status,
        "actions": plan.actions,
        "page_oncall": plan.page_oncall,
        "rules": plan.rules_fired,
        "findings": plan.findings,
        "window": judged_window(plan),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def steps(plan: AgentPlan) -> list[str]:
    """The order of acting: alerts first (the incident, then the page), then the rest in the
    plan's order (stop the harm, then repair)."""
    alerts = [a for a in ("open_incident",) if a in plan.actions]
    if plan.page_oncall or "page_oncall" in plan.actions:
        alerts.append("page_oncall")
    return alerts + [a for a in plan.actions if a not in ALERTS and a != "do_nothing"]


@contextmanager
def acting(registry: Registry) -> Iterator[bool]:
    """One executor at a time: PostgreSQL's advisory lock, or a file lock beside the store.
    Yields False (and waits for nothing) when another holds it."""
    if registry.engine.dialect.name == "postgresql":
        with registry.engine.connect() as connection:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}
            ).scalar()
            try:
                yield bool(got)
            finally:
                if got:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        return
    registry.store.mkdir(parents=True, exist_ok=True)
    with (registry.store / ".agent.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def alert_payload(
    plan: AgentPlan, action: str, *, now: datetime, key: str, dataset: str
) -> dict[str, Any]:
    """Alertmanager's webhook JSON (version 4), one alert for this plan, labelled with the
    served dataset's name."""
    labels = {
        "alertname": "ModelLoopAction",
        "dataset": dataset,
        "action": action,
        "status": plan.status,
        "severity": "page" if action == "page_oncall" else "incident",
    }
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": plan.rationale, "rules": ", ".join(plan.rules_fired)},
        "startsAt": now.isoformat(),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": key,
    }
    return {
        "version": "4",
        "groupKey": f"{dataset}:{plan.status}",
        "status": "firing",
        "receiver": "model-loop",
        "groupLabels": {"alertname": "ModelLoopAction"},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "",
        "alerts": [alert],
    }


def post_webhook(url: str, payload: dict[str, Any], *, key: str) -> dict[str, Any]:
    """POST once per try with an Idempotency-Key; the outcome, never an exception. Tried again
    only when the receiver surely did not take it (refused connection, 5xx, 429): a timeout may
    have been delivered, so it is not repeated blindly (a rerun of the plan sends it again,
    with the same key, for the receiver to drop if it has it)."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    last = ""
    for attempt in range(1, WEBHOOK_TRIES + 1):
        request = urllib.request.Request(  # noqa: S310 - the operator configured this endpoint
            url, data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310
                return {"result": "sent", "http_status": response.status, "attempts": attempt}
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                break  # the receiver refused this body: sending it again changes nothing
        except TimeoutError:  # socket.timeout is TimeoutError
            return _undelivered(f"timed out after {WEBHOOK_TIMEOUT:g} s; not repeated")
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                return _undelivered(f"timed out after {WEBHOOK_TIMEOUT:g} s; not repeated")
            last = f"{type(exc.reason).__name__}: {exc.reason}"
        except OSError as exc:
            last = type(exc).__name__
        time.sleep(0.2 * attempt)
    return {**_undelivered(last), "attempts": attempt}


def _undelivered(error: str) -> dict[str, Any]:
    return {"result": "failed", "error": error, "failure": "unreachable", "attempts": 1}


def _failure(exc: Exception) -> dict[str, Any]:
    """A step that raised: its error in one line and what kind of failure it is."""
    if isinstance(exc, RefusedError):
        kind = "refused"
    elif isinstance(exc, DataError | ArtifactError):
        kind = "bad input"
    elif isinstance(exc, UnreachableError) or type(exc).__name__ in (
        "OperationalError",
        "InterfaceError",
    ):
        kind = "unreachable"
    else:
        kind = "error"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {"result": "failed", "error": f"{type(exc).__name__}: {message}"[:500], "failure": kind}


def unreachable_database() -> tuple[type[BaseException], ...]:
    """The errors SQLAlchemy raises when the database does not answer."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (OperationalError, InterfaceError)


def exit_code(results: list[dict[str, Any]]) -> int:
    """The CLI's exit code for an execution: 0 done (refusals by the gate included: the step was
    carried out), 1 another executor held the lock, else the first failed step's kind."""
    codes = {"refused": EXIT_REFUSED, "bad input": EXIT_BAD_INPUT}
    codes |= {"unreachable": EXIT_UNREACHABLE, "error": EXIT_FAILED}
    for result in results:
        if result.get("result") == "failed":
            return codes[result.get("failure", "error")]
        if result.get("result", "").startswith("skipped: another executor"):
            return EXIT_REFUSED
    return 0


class Executor:
    """Carries out plans against one registry; every step goes to the journal."""

    def __init__(
        self,
        registry: Registry,
        settings: Any,
        *,
        retrain: Callable[[], Path] | None = None,
        actor: str = "python -m src.agent_monitor --execute",
    ) -> None:
        self.registry, self.settings, self.actor = registry, settings, actor
        self.retrain = retrain
        self._moved = False

    def execute(self, plan: AgentPlan, *, force: bool = False) -> list[dict[str, Any]]:
        mark = fingerprint(plan)
        self._moved = False  # whether this execution moved the champion (a rollback)
        with acting(self.registry) as held:
            if not held:
                return [{"action": "*", "result": "skipped: another executor is acting now"}]
            journal = self._journal(mark)
            if EXECUTED in journal.get("*", {}):
                return [{"action": "*", "result": f"skipped: plan {mark} was executed already"}]
            now = datetime.now(UTC)
            results = []
            for action in steps(plan):
                earlier = journal.get(action, {})
                finished = earlier.get(DONE) or earlier.get(SKIPPED)
                if finished is not None:  # a rerun resumes: what was done is not repeated
                    results.append({**finished, "resumed": "done by an earlier execution"})
                    continue
                results.append(self._step(action, plan, mark, now=now, force=force))
            failed = [r["action"] for r in results if r.get("result") == "failed"]
            if not failed:
                self._record(EXECUTED, "*", mark, plan, {"status": "done", "results": results})
            else:
                reason = f"{plan.status} plan: failed at {', '.join(failed)}; a rerun resumes"
                self.registry.note(
                    FAILED,
                    self.registry.alias(CHAMPION),
                    actor=self.actor,
                    reason=reason,
                    details={"plan": mark, "action": "*", "results": results},
                )
        return results

    def _journal(self, mark: str) -> dict[str, dict[str, dict[str, Any]]]:
        """This plan's journal so far: per action, its latest outcome of each kind."""
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for event in self.registry.history(kinds=JOURNAL, details_contain=f'"plan": "{mark}"'):
            details = event["details"] or {}
            if details.get("plan") == mark:
                found.setdefault(details.get("action", "*"), {})[event["kind"]] = details.get(
                    "outcome", details
                )
        return found

    def _record(
        self, kind: str, action: str, mark: str, plan: AgentPlan, outcome: dict[str, Any]
    ) -> None:
        reason = f"{plan.status} plan {mark}: {action}"
        if kind != INTENT:
            reason += f": {outcome.get('result', outcome.get('status'))}"
        details = {"plan": mark, "action": action, "status": plan.status, "outcome": outcome}
        self.registry.note(
            kind, self.registry.alias(CHAMPION), actor=self.actor, reason=reason, details=details
        )

    def _step(
        self, action: str, plan: AgentPlan, mark: str, *, now: datetime, force: bool
    ) -> dict[str, Any]:
        self._record(INTENT, action, mark, plan, {})
        try:
            outcome = {"action": action, **self._act(action, plan, mark, now=now, force=force)}
        except Exception as exc:  # recorded, never lost: the rest of the plan still runs
            outcome = {"action": action, **_failure(exc)}
        if outcome["result"] == "failed":
            kind = FAILED
        elif outcome["result"].startswith("skipped") or outcome["result"] == "refused":
            kind = SKIPPED  # a decision (the cooldown, nothing to roll back to): not retried
        else:
            kind = DONE
        self._record(kind, action, mark, plan, outcome)
        return outcome

    def _act(
        self, action: str, plan: AgentPlan, mark: str, *, now: datetime, force: bool
    ) -> dict[str, Any]:
        if action in ALERTS:
            return self._alert(action, plan, now, key=f"{mark}:{action}")
        if action == "roll_back_model":
            return self._roll_back(force)
        if action == "trigger_retraining":
            return self._retrain(now, force)
        if action == "raise_thresholds":
            return {
                "result": "recommended, not done: this process cannot scale the platform",
                "note": ACTION_NOTES["raise_thresholds"],
                "settings": "Cloud Run max instances / concurrency (design_gcp.md)",
            }
        return {"result": "nothing to do"}

    def _roll_back(self, force: bool) -> dict[str, Any]:
        from src.registry.actions import rollback

        if not self.registry.champion_stack().candidates():
            return {"result": "skipped: no previous champion"}
        _, outcome = rollback(
            self.registry, self.settings, actor=self.actor, obey_cooldown=not force
        )
        if outcome["outcome"] == "rolled_back":
            self._moved = True  # this plan's own move: its retraining is not held back by it
        return {**outcome, "result": outcome["outcome"]}

    def _retrain(self, now: datetime, force: bool) -> dict[str, Any]:
        from src.registry.actions import build_trees, promote

        recent = self.registry.cooling_down(self.settings.agent_cooldown_hours, now)
        # This plan's own rollback is one response with the retraining: stop the harm, then
        # repair. The cooldown guards against plans undoing each other.
        own = recent is not None and self._moved and self.registry.last_move() == recent
        if recent and not own and not force:
            return {"result": f"skipped: cooldown (the champion moved at {recent['ts']})"}
        force = force or own
        if self.retrain is None:
            return {"result": "skipped: no training data given"}
        folder = self.retrain()
        version, _ = self.registry.register(folder, actor=self.actor)
        if self.settings.registry_compile:
            build_trees(self.registry, version)
        _, outcome = promote(
            self.registry,
            version,
            self.settings,
            force=False,
            actor=self.actor,
            obey_cooldown=not force,
        )
        return {
            "result": outcome["outcome"],
            "version": version,
            "gate": {k: outcome.get(k) for k in ("rows_from", "numbers", "reasons")},
        }

    def _alerted_already(self, action: str, plan: AgentPlan, now: datetime) -> str | None:
        """When this alert went out for an incident as grave within the repeat window: a new
        plan each hour (its window moved) is the same incident, and pages once, as
        Alertmanager's repeat_interval would have it."""
        window = timedelta(hours=self.settings.agent_alert_repeat_hours)
        grave = SEVERITY[plan.status]
        sent = self.registry.history(kinds=(DONE,), details_contain=f'"action": "{action}"')
        for event in reversed(sent):
            at = datetime.fromisoformat(event["ts"])
            if now - at >= window:
                break
            details = event["details"] or {}
            if SEVERITY.get(details.get("status", "critical"), 2) >= grave:
                return event["ts"]
        return None

    def _alert(self, action: str, plan: AgentPlan, now: datetime, *, key: str) -> dict[str, Any]:
        if (at := self._alerted_already(action, plan, now)) is not None:
            hours = self.settings.agent_alert_repeat_hours
            return {"result": f"skipped: sent for this incident at {at} (repeats after {hours} h)"}
        url = self.settings.alert_webhook_url
        if url:
            dataset = self.registry.champion_spec().name
            payload = alert_payload(plan, action, now=now, key=key, dataset=dataset)
            return post_webhook(url, payload, key=key)
        print(f"{action}: {plan.status}: {plan.rationale}", file=sys.stderr)
        return {"result": "written to stderr and the history (no ALERT_WEBHOOK_URL)"}
