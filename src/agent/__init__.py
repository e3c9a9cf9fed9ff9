"""The monitoring agent: observations in, evidence, rules as data, a plan out; the optional LLM.

Rules are a table, deterministic and free of I/O; only the CLI (src/agent_monitor.py) and the
service's /monitor read files or the network. Must never import the service or training code.
Room for the executor (acting on a plan) beside the plan it executes.
"""

from src.agent.core import monitor
from src.agent.llm import LLMConfig
from src.agent.observations import (
    DriftSummary,
    MetricPoint,
    load_drift,
    load_metrics,
    parse_metrics_lines,
)
from src.agent.plan import AgentPlan, build_plan, plan_yaml
from src.agent.rules import ACTIONS, RULES, judge

__all__ = [
    "ACTIONS",
    "RULES",
    "AgentPlan",
    "DriftSummary",
    "LLMConfig",
    "MetricPoint",
    "build_plan",
    "judge",
    "load_drift",
    "load_metrics",
    "monitor",
    "parse_metrics_lines",
    "plan_yaml",
]
