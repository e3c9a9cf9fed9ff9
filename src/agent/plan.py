"""The plan: its schema, the rules' rationale, and the YAML the CLI writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from src.agent.evidence import LATENCY_LIMIT_MS, findings_for
from src.agent.rules import ACTION_NOTES, ACTION_ORDER, ACTIONS, Action, Status, Verdict


class AgentPlan(BaseModel):
    """The plan's schema: validated before it is written or served."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    findings: list[dict[str, Any]] = Field(min_length=1)
    actions: list[Action] = Field(min_length=1)
    page_oncall: bool
    rationale: str = Field(min_length=1, max_length=2000)
    rules_fired: list[str]
    generated_at: str
    action_notes: dict[str, str] = Field(
        default={}, description="What each action in this plan means, where the name is terse."
    )
    sources: dict[str, dict[str, Any]] = Field(
        default={}, description="Where each input came from: the request body or a file."
    )
    would_do: list[str] | None = Field(
        default=None, description="What executing the plan would do (when it was not executed)."
    )
    executed: list[dict[str, Any]] | None = Field(
        default=None, description="What executing the plan did, action by action."
    )

    @field_validator("actions")
    @classmethod
    def _unique(cls, actions: list[str]) -> list[str]:
        if len(set(actions)) != len(actions):
            raise ValueError("actions repeat")
        return actions


def rules_rationale(verdict: Verdict) -> str:
    e = verdict.evidence
    if not verdict.fired:
        parts = ["No gate is breached"]
        if e.roc_auc_drop is not None:
            parts.append(f"ROC-AUC is {e.roc_auc_drop:.1f}% off its 7-day median (warn at 3%)")
        if e.drift and e.drift.inputs_drifted:
            parts.append("model inputs drift, so watch PR-AUC (critical at 5% down with drift)")
        return "; ".join(parts) + "."
    sentences = []
    for rule in verdict.fired:
        if rule.name.startswith("roc_auc"):
            sentences.append(f"ROC-AUC fell {e.roc_auc_drop:.1f}% vs its 7-day median")
        elif rule.name == "latency_p95_warn":
            sentences.append(
                f"p95 latency over {LATENCY_LIMIT_MS:.0f} ms on the last {e.latency_over} points "
                f"in a row ({e.latency_over_hours:.0f} h; latest "
                f"{e.latency_recent[-1]:.0f} ms)"
            )
        else:
            sentences.append(f"model inputs drift and PR-AUC fell {e.pr_auc_drop:.1f}%")
    text = "; ".join(dict.fromkeys(sentences)) + "."
    if verdict.status == "critical":
        text += (
            " Page on-call and follow the actions in order: stop the harm first (roll back, "
            "open the incident), then retrain."
        )
    elif (
        e.drift
        and e.drift.inputs_drifted
        and "drift_and_pr_auc_critical" not in {r.name for r in verdict.fired}
    ):
        text += (
            f" Model inputs drift; PR-AUC is down {e.pr_auc_drop or 0:.1f}% against the 5% gate "
            "that would make this critical."
        )
    return text[0].upper() + text[1:]


def order_actions(actions: Sequence[str]) -> list[str]:
    """The allowed actions, each once, in the safe order: stop the harm, then repair."""
    chosen = {a for a in actions if a in ACTIONS}
    return [a for a in ACTION_ORDER if a in chosen] or ["do_nothing"]


def build_plan(
    verdict: Verdict,
    *,
    now: datetime,
    rationale: str | None = None,
    extra: Sequence[str] = (),
    sources: dict[str, dict[str, Any]] | None = None,
) -> AgentPlan:
    actions = order_actions([a for rule in verdict.fired for a in rule.actions] + list(extra))
    return AgentPlan(
        status=verdict.status,
        findings=findings_for(verdict.evidence),
        actions=actions,
        page_oncall=verdict.status == "critical",
        rationale=rationale or rules_rationale(verdict),
        rules_fired=[r.name for r in verdict.fired],
        generated_at=now.isoformat(timespec="seconds"),
        action_notes={a: ACTION_NOTES[a] for a in actions if a in ACTION_NOTES},
        sources=sources or {},
    )


def plan_yaml(plan: AgentPlan) -> str:
    return yaml.safe_dump(plan.model_dump(), sort_keys=False, allow_unicode=True, width=100)
