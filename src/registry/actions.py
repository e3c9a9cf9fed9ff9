"""What moves the champion: promotion through the gate, rollback under the cooldown, and the
registration a training run ends with. Each outcome is recorded in the registry's history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from src.errors import DataError
from src.registry.core import CHALLENGER, CHAMPION, Registry
from src.settings import Settings


def promote(
    registry: Registry, version: str, settings: Settings, *, force: bool, actor: str
) -> tuple[int, dict[str, Any]]:
    """Through the gate: 0 and the new champion, or 1 and the gate's reasons (recorded)."""
    from src.registry.gate import keep_holdout, run_gate

    registry.get(version)
    result = run_gate(
        registry,
        version,
        engine=registry.engine,
        margin=settings.gate_margin,
        min_rows=settings.gate_min_rows,
        max_widening=settings.gate_max_gap_widening,
    )
    details = result.as_dict()
    if result.passed or force:
        kind = "promoted" if result.passed else "forced"
        reason = (
            "passed the gate"
            if result.passed
            else "forced past the gate: " + "; ".join(result.reasons)
        )
        registry.set_alias(
            CHAMPION, version, kind=kind, actor=actor, reason=reason, details=details
        )
        keep_holdout(registry, version)
        return 0, {"outcome": kind, **details}
    registry.set_alias(
        CHALLENGER, version, kind="challenger", actor=actor, reason="registered as challenger"
    )
    registry.note(
        "refused", version, actor=actor, reason="; ".join(result.reasons), details=details
    )
    return 1, {"outcome": "refused", **details}


def rollback(
    registry: Registry, settings: Settings, *, force: bool, actor: str
) -> tuple[int, dict[str, Any]]:
    previous = registry.previous_champion()
    if previous is None:
        raise DataError("nothing to roll back to: the champion has no predecessor")
    recent = registry.cooling_down(settings.agent_cooldown_hours, datetime.now(UTC))
    if recent and not force:
        hours = settings.agent_cooldown_hours
        reason = f"cooldown: the champion last moved at {recent['ts']} (< {hours} h ago)"
        registry.note("refused", previous, actor=actor, reason=reason)
        return 1, {"outcome": "refused", "reason": reason}
    current = registry.alias(CHAMPION)
    kind = "rolled_back" if not recent else "forced"
    registry.set_alias(
        CHAMPION, previous, kind=kind, actor=actor, reason=f"rolled back from {current}"
    )
    return 0, {"outcome": kind, "champion": previous, "was": current}


def register_trained(registry: Registry, folder: Path, settings: Settings, *, actor: str) -> str:
    """After training: register the set; make it champion when there is none, else put it
    through the gate. Returns a sentence saying what became of it."""
    from src.registry.gate import keep_holdout

    version, new = registry.register(folder, actor=actor)
    if not new:
        return f"{version}: already registered, nothing changed"
    if registry.alias(CHAMPION) is None:
        registry.set_alias(  # not a "move": the cooldown counts promotions and rollbacks
            CHAMPION, version, kind="champion", actor=actor, reason="the first model: champion"
        )
        keep_holdout(registry, version)
        return f"{version}: registered as champion (the registry had none)"
    code, outcome = promote(registry, version, settings, force=False, actor=actor)
    if code == 0:
        return f"{version}: promoted to champion through the gate ({outcome['rows_from']})"
    reasons = "; ".join(outcome["reasons"])
    return f"{version}: registered as a candidate (challenger); the gate refused it: {reasons}"
