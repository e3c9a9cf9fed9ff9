"""What moves the champion: promotion through the gate, rollback down the champions' stack, and
the registration a training run ends with. Every move holds the registry's move lock, verifies its
target, and is a compare-and-swap against the champion it read; every outcome is recorded.

Who may wait for what: a person at the CLI is never held by the agent's cooldown (but a forced
promotion needs a reason, and every human move records user and host); the agent obeys it.
"""

from __future__ import annotations

import getpass
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from src.errors import RefusedError
from src.registry.core import CHALLENGER, CHAMPION, MoveConflictError, Registry
from src.settings import Settings

GATE_RETRIES = 3  # a move refused because another came first is judged again this many times


def human(command: str) -> str:
    """The actor a person's move records: who, where, through what."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown user"
    return f"{user}@{socket.gethostname()} ({command})"


def verify_set(folder: Path) -> str | None:
    """Why the set in `folder` cannot be served, or None: every hash, the pickles (read by the
    library versions that wrote them), and the training-time probabilities again (LightGBM's own
    predictor, no compiling)."""
    from src.model.artifacts import load_bundle
    from src.model.predictor import Predictor

    try:
        bundle = load_bundle(folder)
        _ = bundle.pipeline, bundle.model  # the set's reference path must load too
        Predictor(bundle, engine="booster").self_check()
    except Exception as exc:  # any failure to load is a failure to verify
        return str(exc) if type(exc).__name__ == "ArtifactError" else f"{type(exc).__name__}: {exc}"
    return None


def _cooldown(registry: Registry, settings: Settings) -> str | None:
    recent = registry.cooling_down(settings.agent_cooldown_hours, datetime.now(UTC))
    if recent is None:
        return None
    hours = settings.agent_cooldown_hours
    return f"cooldown: the champion last moved at {recent['ts']} (< {hours} h ago)"


def promote(
    registry: Registry,
    version: str,
    settings: Settings,
    *,
    force: bool,
    actor: str,
    reason: str | None = None,
    obey_cooldown: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Through the gate: 0 and the new champion, or 1 and why not (recorded). `force` overrides
    the gate's verdict, never the verification of the files."""
    registry.get(version)
    with registry.moves_locked(settings.registry_lock_wait_seconds):
        for _ in range(GATE_RETRIES):
            champion = registry.alias(CHAMPION)
            if champion == version:  # nothing to move, nothing recorded as a move
                return 0, {"outcome": "unchanged", "champion": version, "challenger": version}
            refusal = (_cooldown(registry, settings) if obey_cooldown else None) or (
                (problem := verify_set(registry.folder(version)))
                and f"its files do not verify: {problem}"
            )
            if refusal:
                registry.note("refused", version, actor=actor, reason=refusal)
                return 1, {"outcome": "refused", "challenger": version, "reasons": [refusal]}
            try:
                return _judge_and_move(registry, version, champion, settings, force, actor, reason)
            except MoveConflictError as conflict:
                print(f"registry: {conflict}; judging again", file=sys.stderr)
        raise RefusedError(f"the champion moved {GATE_RETRIES} times while {version} was judged")


def _judge_and_move(
    registry: Registry,
    version: str,
    champion: str | None,
    settings: Settings,
    force: bool,
    actor: str,
    reason: str | None,
) -> tuple[int, dict[str, Any]]:
    from src.registry.gate import run_gate

    result = run_gate(
        registry,
        version,
        champion=champion,
        engine=registry.engine,
        margin=settings.gate_margin,
        min_rows=settings.gate_min_rows,
        max_widening=settings.gate_max_gap_widening,
    )
    details = result.as_dict()
    why = f": {reason}" if reason else ""
    if result.passed or force:
        kind = "promoted" if result.passed else "forced"
        said = "passed the gate" if result.passed else "forced past the gate: "
        said += "; ".join(result.reasons) + why
        registry.move(
            CHAMPION,
            version,
            expected=champion,
            kind=kind,
            actor=actor,
            reason=said,
            details=details,
        )
        return 0, {"outcome": kind, **details}
    registry.move(
        CHALLENGER,
        version,
        expected=registry.alias(CHALLENGER),
        kind="challenger",
        actor=actor,
        reason="registered as challenger",
    )
    registry.note(
        "refused", version, actor=actor, reason="; ".join(result.reasons), details=details
    )
    return 1, {"outcome": "refused", **details}


def rollback(
    registry: Registry,
    settings: Settings,
    *,
    actor: str,
    reason: str | None = None,
    obey_cooldown: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Back down the champions' stack: the newest earlier champion that was not rolled back from
    and whose files verify (broken ones are skipped, and said). 1 and the alias untouched when
    there is none, or the cooldown holds (for the agent)."""
    with registry.moves_locked(settings.registry_lock_wait_seconds):
        current = registry.alias(CHAMPION)
        refusal = _cooldown(registry, settings) if obey_cooldown else None
        skipped: list[dict[str, str]] = []
        target = None
        if refusal is None:
            for candidate in registry.champion_stack().candidates():
                problem = verify_set(registry.folder(candidate))
                if problem is None:
                    target = candidate
                    break
                skipped.append({"version": candidate, "reason": problem})
            if target is None:
                refusal = "nothing to roll back to: " + (
                    "; ".join(f"{s['version']} does not verify ({s['reason']})" for s in skipped)
                    or "no earlier champion that was not itself rolled back from"
                )
        if target is None:
            registry.note("refused", current, actor=actor, reason=refusal, details=skipped or None)
            return 1, {"outcome": "refused", "champion": current, "reason": refusal}
        said = f"rolled back from {current}" + (f": {reason}" if reason else "")
        details = {"skipped": skipped}
        registry.move(
            CHAMPION,
            target,
            expected=current,
            kind="rolled_back",
            actor=actor,
            reason=said,
            details=details,
        )
        return 0, {"outcome": "rolled_back", "champion": target, "was": current, **details}


def build_trees(registry: Registry, version: str) -> str:
    """Compile a version's trees for this machine once and keep them in the store, so a worker
    swaps to it in milliseconds instead of compiling (src/compiled.py). Says what it did."""
    from src.model.artifacts import load_bundle
    from src.model.compiled import build_key, compiled_trees

    key = build_key()
    if registry.read_build(version, key) is not None:
        return "compiled trees already kept"
    print(f"registry: compiling {version}'s trees for serving (once per version)", file=sys.stderr)
    _, _, code = compiled_trees(load_bundle(registry.folder(version)).model_text)
    registry.keep_build(version, key, code)
    return "compiled trees kept"


def register_trained(
    registry: Registry, folder: Path, settings: Settings, *, actor: str, gate: bool = True
) -> str:
    """After training: register the set (and compile its trees); make it champion when there is
    none, else put it through the gate (`gate`; else leave it registered). Returns a sentence
    saying what became of it."""
    version, new = registry.register(folder, actor=actor)
    if settings.registry_compile:
        build_trees(registry, version)
    if not new:
        return f"{version}: already registered, nothing changed"
    with registry.moves_locked(settings.registry_lock_wait_seconds):
        if registry.alias(CHAMPION) is None:
            try:  # not a "move": the cooldown counts promotions and rollbacks
                registry.move(
                    CHAMPION,
                    version,
                    expected=None,
                    kind="champion",
                    actor=actor,
                    reason="the first model: champion",
                )
                return f"{version}: registered as champion (the registry had none)"
            except MoveConflictError:
                pass  # another first model won: this one meets the gate below
    if not gate:
        return f"{version}: registered (promote it with python -m src.registry promote {version})"
    code, outcome = promote(registry, version, settings, force=False, actor=actor)
    if code == 0:
        return f"{version}: promoted to champion through the gate ({outcome['rows_from']})"
    reasons = "; ".join(outcome["reasons"])
    return f"{version}: registered as a candidate (challenger); the gate refused it: {reasons}"
