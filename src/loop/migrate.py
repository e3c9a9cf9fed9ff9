"""python -m src.loop.migrate current | upgrade [REVISION] | downgrade REVISION | columns |
drop-columns CHANGE

The log's (and the registry's) schema, moved by hand: every process upgrades to the latest at
start, so this is for going back (a release rolled back) and for looking. The database is
DATABASE_URL, or PREDICTION_LOG_DIR's SQLite file. Each step keeps the rows the older schema can
hold; the statistics tables are derived and computed again. `columns` lists the log's dataset
and every recorded change of its feature columns (a model whose spec added columns added them);
`drop-columns CHANGE` takes one back (the values in those columns go). Exit codes: 0 done, 1
refused, 2 bad input, 3 the database unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from src.fileio import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.loop.migrate",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("current", help="the schema's revision")
    up = commands.add_parser("upgrade", help="to the latest revision, or REVISION")
    up.add_argument("revision", nargs="?", default="head")
    down = commands.add_parser("downgrade", help="back to REVISION ('base': no tables)")
    down.add_argument("revision")
    commands.add_parser("columns", help="the log's dataset and the changes to its columns")
    drop = commands.add_parser("drop-columns", help="take back a change that added columns")
    drop.add_argument("change", type=int)
    return parser


def show_columns(engine: Any) -> None:
    from src.loop.columns import column_changes, log_layout

    layout = log_layout(engine)
    if layout is None:
        print("the log holds no dataset yet (its first model's spec will give it its columns)")
        return
    print(f"dataset {layout.dataset}: label {layout.label} = {layout.positive}")
    for change in column_changes(engine):
        names = ", ".join(f"{c['name']} ({c['sql_name']})" for c in change["columns"])
        print(f"  change {change['id']} at {change['ts']}: {change['action']} {names}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from alembic.util import CommandError

        from src.errors import DataError
        from src.loop.tables import current_revision, downgrade, make_engine, upgrade
        from src.settings import Settings

        engine = make_engine(Settings().prediction_log_url)
        try:
            if args.command == "columns":
                upgrade(engine)
                show_columns(engine)
                return 0
            if args.command == "drop-columns":
                from src.loop.columns import drop_change

                upgrade(engine)
                dropped = drop_change(engine, args.change)
                print(f"dropped the columns change {args.change} added: {', '.join(dropped)}")
                return 0
            if args.command == "upgrade":
                upgrade(engine, args.revision)
            elif args.command == "downgrade":
                downgrade(engine, args.revision)
            revision = current_revision(engine)
        except CommandError as exc:
            raise DataError(f"{args.revision}: {exc}") from None
        finally:
            engine.dispose()
        print(f"schema revision: {revision or 'none (no tables)'}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
