"""python -m src.registry list | show VERSION | register DIR | promote VERSION | rollback | history

The registry lives in the log's database (DATABASE_URL, or PREDICTION_LOG_DIR's SQLite file), its
sets in REGISTRY_STORE (default PREDICTION_LOG_DIR/registry). Every move records who (user and
host) and why (--reason; required with --force). Each command prints JSON instead of text with
--json, before or after the command's name.

Exit codes: 0 done; 1 refused (the gate, a set that does not verify, nothing to roll back to, the
lock); 2 bad input; 3 the database could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.fileio import run_cli

if TYPE_CHECKING:
    from src.registry.core import Registry
    from src.settings import Settings

COMMAND = "python -m src.registry"


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    # The same flag after the command's name; SUPPRESS keeps it from undoing the one before.
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_, parents=[as_json], formatter_class=formatter, allow_abbrev=False
        )

    command("list", "every version, with its aliases")
    command("show", "one version: its manifest").add_argument("version")
    command(
        "register", "copy an artifact set into the registry (champion if there is none)"
    ).add_argument("folder", type=Path)
    promote = command("promote", "make a version champion, through the gate")
    promote.add_argument("version")
    promote.add_argument(
        "--force", action="store_true", help="override the gate's verdict (needs --reason)"
    )
    promote.add_argument("--reason", help="why, recorded in the history")
    rollback = command("rollback", "make the newest earlier champion that verifies champion again")
    rollback.add_argument("--reason", help="why, recorded in the history")
    command("history", "what happened, oldest first")
    return parser


def _emit(payload: Any, text: str, as_json: bool) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "force", False) and not args.reason:
        parser.error("--force needs --reason: say why the gate is overridden")

    def body() -> int:
        from src.registry.core import opened_registry
        from src.settings import Settings

        settings = Settings()
        with opened_registry(settings) as registry:
            return _run(args, registry, settings)

    return run_cli(body)


def _describe(registry: Registry) -> list[dict[str, Any]]:
    from src.registry.core import CHALLENGER, CHAMPION

    aliases: dict[str | None, list[str]] = {}
    for name in (CHAMPION, CHALLENGER):
        aliases.setdefault(registry.alias(name), []).append(name)
    return [
        {
            "version": v.version,
            "alias": ",".join(aliases.get(v.version, [])) or None,
            "registered_at": v.registered_at,
            "trained_at": v.manifest.get("created_at"),
            "source": v.source,
        }
        for v in registry.versions()
    ]


def _run(args: argparse.Namespace, registry: Registry, settings: Settings) -> int:
    from src.errors import DataError
    from src.registry.actions import human, promote, register_trained, rollback

    actor = human(f"{COMMAND} {args.command}")
    if args.command == "list":
        rows = _describe(registry)
        lines = [f"{r['version']}  {r['alias'] or '':<21} trained {r['trained_at']}" for r in rows]
        _emit(rows, "\n".join(lines) or _empty_hint(settings), args.json)
        return 0
    if args.command == "show":
        version = registry.get(args.version)
        _emit(version.__dict__, json.dumps(version.manifest, indent=2), args.json)
        return 0
    if args.command == "register":
        if not args.folder.is_dir():
            raise DataError(f"{args.folder}: no such folder")
        said = register_trained(registry, args.folder, settings, actor=actor, gate=False)
        _emit({"result": said}, f"registry: {said}", args.json)
        return 0
    if args.command == "promote":
        code, outcome = promote(
            registry, args.version, settings, force=args.force, actor=actor, reason=args.reason
        )
        _emit(outcome, _gate_text(outcome), args.json)
        return code
    if args.command == "rollback":
        code, outcome = rollback(registry, settings, actor=actor, reason=args.reason)
        _emit(outcome, _rollback_text(outcome), args.json)
        return code
    events = registry.history()
    lines = [
        f"{e['ts']}  {e['kind']:<16} {e['version'] or '-':<16} {e['actor']}: {e['reason']}"
        for e in events
    ]
    _emit(events, "\n".join(lines) or "no history yet", args.json)
    return 0


def _empty_hint(settings: Settings) -> str:
    hint = f"no versions yet in {settings.registry_store}"
    if Path("artifacts/manifest.json").is_file():
        hint += "; artifacts/ holds a trained set: python -m src.registry register artifacts"
    return hint


def _rollback_text(outcome: dict[str, Any]) -> str:
    if outcome["outcome"] == "refused":
        return f"refused: {outcome['reason']} (the champion stays {outcome['champion']})"
    lines = [f"rolled back: {outcome['champion']} is champion again (was {outcome['was']})"]
    lines += [f"  skipped {s['version']}: {s['reason']}" for s in outcome.get("skipped", [])]
    return "\n".join(lines)


def _gate_text(outcome: dict[str, Any]) -> str:
    if outcome["outcome"] == "unchanged":
        return f"unchanged: {outcome['champion']} is already the champion"
    numbers = outcome.get("numbers", {})
    lines = [f"{outcome['outcome']}: {outcome['challenger']} (champion {outcome.get('champion')})"]
    if "rows_from" in outcome:
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
