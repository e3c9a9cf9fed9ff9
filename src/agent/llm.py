"""The optional LLM: rewrites the rationale and may add allowed actions; never lowers the status.

Called only when the user configures an endpoint; any failure falls back to the rules' plan.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.agent.plan import AgentPlan, build_plan
from src.agent.rules import ACTIONS, SEVERITY, Verdict
from src.errors import DataError


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key: str | None = field(repr=False)  # never printed, never logged
    timeout: float = 10.0

    @classmethod
    def from_env(cls, *, required: bool) -> LLMConfig | None:
        base = os.environ.get("AGENT_LLM_BASE_URL", "").strip()
        if not base:
            if required:
                raise DataError("--llm needs AGENT_LLM_BASE_URL (an OpenAI-compatible endpoint)")
            return None
        return cls(
            base_url=base.rstrip("/"),
            model=os.environ.get("AGENT_LLM_MODEL", "gpt-4o-mini"),
            api_key=os.environ.get("AGENT_LLM_API_KEY") or None,
            timeout=float(os.environ.get("AGENT_LLM_TIMEOUT", "10")),
        )


class LLMReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    rationale: str = Field(min_length=1, max_length=2000)
    status: str | None = None
    extra_actions: list[str] = []


LLM_SYSTEM_PROMPT = (
    "You assist an on-call ML engineer. You get a monitoring verdict computed by fixed rules. "
    "Write a short rationale (at most 4 sentences) a person on call can act on. You may propose "
    f"extra actions from this list only: {', '.join(ACTIONS)}. You may raise the status, never "
    'lower it. Reply with JSON only: {"rationale": str, "status": str, "extra_actions": [str]}.'
)


def ask_llm(config: LLMConfig, plan: AgentPlan) -> LLMReply:
    """One chat-completions call; raises on any transport, HTTP or format problem."""
    import urllib.request

    payload = {
        "model": config.model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": LLM_SYSTEM_PROMPT},
            {"role": "user", "content": plan.model_dump_json()},
        ],
    }
    request = urllib.request.Request(  # noqa: S310 - the user configured this endpoint
        f"{config.base_url}/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if config.api_key:
        request.add_header("Authorization", f"Bearer {config.api_key}")
    with urllib.request.urlopen(request, timeout=config.timeout) as response:  # noqa: S310
        body = json.loads(response.read())
    content = body["choices"][0]["message"]["content"].strip()
    if content.startswith("```"):  # tolerate a fenced JSON block
        content = content.strip("`").removeprefix("json").strip()
    return LLMReply.model_validate_json(content)


def apply_llm(verdict: Verdict, plan: AgentPlan, config: LLMConfig, *, now: datetime) -> AgentPlan:
    """The LLM's reply within guardrails; any failure falls back to the rules-only plan."""
    try:
        reply = ask_llm(config, plan)
    except Exception as exc:  # network, timeout, HTTP error, refusal, garbage: all fall back
        note = {"llm": "unavailable; rules-only plan", "reason": type(exc).__name__}
        if isinstance(exc, OSError):  # it did not answer (refused, timed out, unresolvable)
            note["unreachable"] = True
        return plan.model_copy(update={"findings": [*plan.findings, note]})
    notes: dict[str, Any] = {"llm": "rationale written by the model"}
    status = verdict.status
    if reply.status in SEVERITY:
        if SEVERITY[reply.status] > SEVERITY[status]:
            status, notes["raised_status_to"] = reply.status, reply.status
        elif SEVERITY[reply.status] < SEVERITY[status]:
            notes["ignored_lower_status"] = reply.status
    dropped = [a for a in reply.extra_actions if a not in ACTIONS]
    if dropped:
        notes["dropped_actions"] = dropped
    raised = Verdict(status=status, fired=verdict.fired, evidence=verdict.evidence)
    updated = build_plan(
        raised,
        now=now,
        rationale=reply.rationale,
        extra=[a for a in reply.extra_actions if a in ACTIONS],
        sources=plan.sources,
    )
    actions = [a for a in updated.actions if a != "do_nothing"] or ["do_nothing"]
    return updated.model_copy(update={"findings": [*updated.findings, notes], "actions": actions})
