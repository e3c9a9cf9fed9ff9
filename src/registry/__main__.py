"""python -m src.registry list | show VERSION | register DIR | promote VERSION | rollback | history

Every command takes --json. Exit codes: 0 done, 1 refused by the gate (or the cooldown), 2 bad
input. The registry is in the log's database (DATABASE_URL, or PREDICTION_LOG_DIR's SQLite file)
and its sets in REGISTRY_STORE (default PREDICTION_LOG_DIR/registry).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.errors import DataError
from src.fileio import run_cli
from src.registry.actions import promote, rollback
from src.registry.core import CHALLENGER, CHAMPION, Registry, opened_registry
from src.settings import Settings

ACTOR = "python -m src.registry"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m src.registry", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version, with its aliases")
    show = commands.add_parser("show", help="one version: its manifest and metrics")
    show.add_argument("version")
    register = commands.add_parser("register", help="copy an artifact set into the registry")
    register.add_argument("folder", type=Path)
    promote = commands.add_parser("promote", help="make a version champion, through the gate")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="override the gate (recorded)")
    rollback = commands.add_parser("rollback", help="make the previous champion champion again")
    rollback.add_argument("--force", action="store_true", help="override the cooldown")
    commands.add_parser("history", help="what happened, oldest first")
    return parser


def _emit(payload: Any, text: str, as_json: bool) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else text)


def _describe(registry: Registry) -> list[dict[str, Any]]:
    aliases: dict[str | None, list[str]] = {}
    for name in (CHAMPION, CHALLENGER):
        aliases.setdefault(registry.alias(name), []).append(name)
    out = []
    for v in registry.versions():
        metrics = v.manifest.get("summary", {})
        out.append(
            {
                "version": v.version,
                "alias": ",".join(aliases.get(v.version, [])) or None,
                "registered_at": v.registered_at,
                "trained_at": v.manifest.get("created_at"),
                "source": v.source,
                **metrics,
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()

    def body() -> int:
        with opened_registry(settings) as registry:
            return _run(args, registry, settings)

    return run_cli(body)


def _run(args: argparse.Namespace, registry: Registry, settings: Settings) -> int:
    if args.command == "list":
        rows = _describe(registry)
        lines = [f"{r['version']}  {r['alias'] or '':<21} trained {r['trained_at']}" for r in rows]
        _emit(rows, "\n".join(lines) or "no versions yet", args.json)
        return 0
    if args.command == "show":
        version = registry.get(args.version)
        _emit(version.__dict__, json.dumps(version.manifest, indent=2), args.json)
        return 0
    if args.command == "register":
        if not args.folder.is_dir():
            raise DataError(f"{args.folder}: no such folder")
        version, new = registry.register(args.folder, actor=ACTOR)
        _emit(
            {"version": version, "new": new},
            f"{'registered' if new else 'already registered'}: {version}",
            args.json,
        )
        return 0
    if args.command == "promote":
        code, outcome = promote(registry, args.version, settings, force=args.force, actor=ACTOR)
        _emit(outcome, _gate_text(outcome), args.json)
        return code
    if args.command == "rollback":
        code, outcome = rollback(registry, settings, force=args.force, actor=ACTOR)
        _emit(outcome, json.dumps(outcome), args.json)
        return code
    events = registry.history()
    lines = [
        f"{e['ts']}  {e['kind']:<16} {e['version'] or '-':<16} {e['actor']}: {e['reason']}"
        for e in events
    ]
    _emit(events, "\n".join(lines) or "no history yet", args.json)
    return 0


def _gate_text(outcome: dict[str, Any]) -> str:
    numbers = outcome.get("numbers", {})
    lines = [f"{outcome['outcome']}: {outcome['challenger']} (champion {outcome['champion']})"]
    lines.append(f"  judged on {outcome['rows_from']}")
    if numbers:
        low, high = numbers["difference_ci95"]
        lines.append(
            f"  ROC-AUC {numbers['roc_auc_challenger']} vs {numbers['roc_auc_champion']}: "
            f"{numbers['roc_auc_difference']:+.4f} (95% CI {low:+.4f} to {high:+.4f}; "
            f"margin {numbers['margin']})"
        )
        lines.append(
            f"  parity gap widening: {numbers['gap_widening']} (limit {numbers['max_widening']})"
        )
    lines += [f"  refused: {r}" for r in outcome.get("reasons", [])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
