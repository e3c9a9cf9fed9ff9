"""Observe -> think -> act in one call: the entry point the CLI and POST /monitor share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from src.agent.llm import LLMConfig, apply_llm
from src.agent.observations import DriftSummary, MetricPoint
from src.agent.plan import AgentPlan, build_plan
from src.agent.rules import judge


def monitor(
    points: list[MetricPoint],
    drift: DriftSummary | None,
    *,
    now: datetime,
    llm: LLMConfig | None = None,
    sources: dict[str, dict[str, Any]] | None = None,
) -> AgentPlan:
    """Observations -> plan: the one entry point the CLI and POST /monitor share. `sources` says
    where the observations came from; the plan carries it."""
    verdict = judge(points, drift)
    plan = build_plan(verdict, now=now, sources=sources)
    return apply_llm(verdict, plan, llm, now=now) if llm else plan
