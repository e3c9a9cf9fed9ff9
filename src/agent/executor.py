"""The agent acts: a plan's actions carried out in its (safe) order, with the guards a careful
on-call engineer would demand.

- roll_back_model: the previous champion becomes champion again (the registry's rollback);
- open_incident / page_oncall: POSTed to ALERT_WEBHOOK_URL as Alertmanager's webhook JSON, with a
  timeout and retries; without a webhook, to stderr and the registry's history;
- trigger_retraining: a challenger trained on the training data plus the labelled traffic in
  the log (src/registry/retrain.py), registered, gated, promoted if it passes;
- raise_thresholds: recorded as a recommendation naming the settings to raise: nothing in this
  process can scale the platform, so it does not pretend to.

Guards: a cooldown (no second promotion or rollback within AGENT_COOLDOWN_HOURS unless forced),
idempotency (the same plan executed twice acts once) and a lock (two executors never act at once).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from src.agent.plan import AgentPlan
from src.agent.rules import ACTION_NOTES
from src.registry.core import CHAMPION, Registry
from src.settings import Settings

WEBHOOK_TIMEOUT, WEBHOOK_TRIES = 5.0, 3
_LOCK_KEY = 0x5ADC0DF


def fingerprint(plan: AgentPlan) -> str:
    """What makes two plans the same plan: the verdict and the observations it judged."""
    key = {
        "status": plan.status,
        "actions": plan.actions,
        "rules": plan.rules_fired,
        "sources": plan.sources,
        "findings": plan.findings,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def alert_payload(plan: AgentPlan, action: str, *, now: datetime) -> dict[str, Any]:
    """Alertmanager's webhook JSON (version 4), one alert for this plan."""
    labels = {
        "alertname": "AdultIncomeModel",
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
        "fingerprint": fingerprint(plan),
    }
    return {
        "version": "4",
        "groupKey": f"adult-income:{plan.status}",
        "status": "firing",
        "receiver": "adult-income",
        "groupLabels": {"alertname": "AdultIncomeModel"},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "",
        "alerts": [alert],
    }


def post_webhook(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST with a timeout, retried with backoff; the outcome, never an exception."""
    body = json.dumps(payload).encode()
    last = ""
    for attempt in range(1, WEBHOOK_TRIES + 1):
        request = urllib.request.Request(  # noqa: S310 - the operator configured this endpoint
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310
                return {"result": "sent", "http_status": response.status, "attempts": attempt}
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, TimeoutError) as exc:
            last = type(exc).__name__
        time.sleep(0.2 * attempt)
    return {"result": "failed", "error": last, "attempts": WEBHOOK_TRIES}


class Executor:
    """Carries out plans against one registry; every outcome goes to the history."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        *,
        retrain: Callable[[], Path] | None = None,
        actor: str = "python -m src.agent_monitor --execute",
    ) -> None:
        self.registry, self.settings, self.actor = registry, settings, actor
        self.retrain = retrain

    def execute(self, plan: AgentPlan, *, force: bool = False) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        mark = fingerprint(plan)
        with acting(self.registry) as held:
            if not held:
                return [{"action": "*", "result": "skipped: another executor is acting now"}]
            done = [e for e in self.registry.history() if e["kind"] == "executed"]
            if any((e["details"] or {}).get("plan") == mark for e in done):
                return [{"action": "*", "result": f"skipped: plan {mark} was executed already"}]
            results = [self._act(action, plan, now=now, force=force) for action in plan.actions]
            if plan.page_oncall and "page_oncall" not in plan.actions:
                results.append(self._alert("page_oncall", plan, now))
            self.registry.note(
                "executed",
                self.registry.alias(CHAMPION),
                actor=self.actor,
                reason=f"{plan.status} plan: {', '.join(plan.actions)}",
                details={"plan": mark, "results": results},
            )
        return results

    def _act(self, action: str, plan: AgentPlan, *, now: datetime, force: bool) -> dict[str, Any]:
        if action == "roll_back_model":
            return self._roll_back(now, force)
        if action == "open_incident":
            return self._alert(action, plan, now)
        if action == "trigger_retraining":
            return self._retrain(now, force)
        if action == "raise_thresholds":
            note = ACTION_NOTES["raise_thresholds"]
            self.registry.note("recommended", None, actor=self.actor, reason=note)
            return {
                "action": action,
                "result": "recommended, not done: this process cannot scale the platform",
                "settings": "Cloud Run max instances / concurrency (design_gcp.md)",
            }
        return {"action": action, "result": "nothing to do"}

    def _roll_back(self, now: datetime, force: bool) -> dict[str, Any]:
        from src.registry.actions import rollback

        if not self.registry.champion_stack().candidates():
            return {"action": "roll_back_model", "result": "skipped: no previous champion"}
        _, outcome = rollback(
            self.registry, self.settings, actor=self.actor, obey_cooldown=not force
        )
        return {"action": "roll_back_model", "result": outcome["outcome"], **outcome}

    def _retrain(self, now: datetime, force: bool) -> dict[str, Any]:
        from src.registry.actions import build_trees, promote

        recent = self.registry.cooling_down(self.settings.agent_cooldown_hours, now)
        if recent and not force:
            return {
                "action": "trigger_retraining",
                "result": f"skipped: cooldown (the champion moved at {recent['ts']})",
            }
        if self.retrain is None:
            return {"action": "trigger_retraining", "result": "skipped: no training data given"}
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
            "action": "trigger_retraining",
            "result": outcome["outcome"],
            "version": version,
            "gate": {k: outcome.get(k) for k in ("rows_from", "numbers", "reasons")},
        }

    def _alert(self, action: str, plan: AgentPlan, now: datetime) -> dict[str, Any]:
        payload = alert_payload(plan, action, now=now)
        url = self.settings.alert_webhook_url
        if url:
            outcome = post_webhook(url, payload)
        else:
            print(f"{action}: {plan.status}: {plan.rationale}", file=sys.stderr)
            outcome = {"result": "written to stderr and the history (no ALERT_WEBHOOK_URL)"}
        self.registry.note(action, None, actor=self.actor, reason=plan.rationale, details=outcome)
        return {"action": action, **outcome}
