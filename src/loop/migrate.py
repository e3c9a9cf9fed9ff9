"""python -m src.loop.migrate current | upgrade [REVISION] | downgrade REVISION

The log's (and the registry's) schema, moved by hand: every process upgrades to the latest at
start, so this is for going back (a release rolled back) and for looking. The database is
DATABASE_URL, or PREDICTION_LOG_DIR's SQLite file. Each step keeps the rows the older schema can
hold; the statistics tables are derived and computed again. Exit codes: 0 done, 2 bad input, 3
the database unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from alembic.util import CommandError

        from src.errors import DataError
        from src.loop.tables import current_revision, downgrade, make_engine, upgrade
        from src.settings import Settings

        engine = make_engine(Settings().prediction_log_url)
        try:
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
