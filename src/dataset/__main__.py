"""python -m src.dataset infer | check | shift: draft a dataset spec from a table, check a table
against one, or draw a shifted sample of it.

    python -m src.dataset infer --data TABLE --label COL [--positive VALUE]
        [--sensitive COL [COL ...]] --out SPEC
    python -m src.dataset check --data TABLE --spec SPEC
    python -m src.dataset shift --data TABLE --spec SPEC --out SAMPLE [--rows N]

infer prints one line per column: what it decided and why (suspected leakage and suggested
sensitive columns loudly); nothing is written unless the label has exactly two values. check
prints one line per problem (line, column, value). shift writes rows of the table's holdout with
the change the demo plants in its replay (src/dataset/shifts.py), for `python -m src.drift`. Exit
codes: 0 done (check: no problem); 2 bad
input (a file, a spec, a flag, or a table the spec does not describe).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from src import cli

MAX_SHOWN = 50  # check's lines at most; the count is always exact


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.dataset", __doc__.split("\n\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    infer = commands.add_parser(
        "infer", help="draft a spec from a table", formatter_class=cli.HELP, allow_abbrev=False
    )
    infer.add_argument("--data", required=True, type=Path, help="the table (CSV or Parquet)")
    infer.add_argument("--label", required=True, help="the label column (two values)")
    infer.add_argument(
        "--positive", help="the label's positive value (default: 1, true, yes, or the rarer)"
    )
    infer.add_argument(
        "--sensitive",
        nargs="+",
        default=[],
        metavar="COL",
        help="sensitive columns: never inputs, measured for fairness",
    )
    infer.add_argument("--out", required=True, type=Path, help="where the spec (YAML) goes")
    infer.add_argument("--name", help="the dataset's name (default: the file's name)")
    infer.add_argument(
        "--keep",
        nargs="+",
        default=[],
        metavar="COL",
        help="keep these even when they look like leakage",
    )
    infer.add_argument(
        "--numeric", nargs="+", default=[], metavar="COL", help="integer codes kept as numbers"
    )
    infer.add_argument(
        "--categorical", nargs="+", default=[], metavar="COL", help="numbers read as categories"
    )
    infer.add_argument(
        "--inputs",
        nargs="+",
        default=[],
        metavar="COL",
        help="datetime columns the model takes as inputs",
    )
    check = commands.add_parser(
        "check", help="check a table against a spec", formatter_class=cli.HELP, allow_abbrev=False
    )
    check.add_argument("--data", required=True, type=Path, help="the table (CSV or Parquet)")
    check.add_argument("--spec", required=True, type=Path, help="the dataset spec (YAML)")
    shift = commands.add_parser(
        "shift",
        help="a shifted sample of a table's holdout rows",
        formatter_class=cli.HELP,
        allow_abbrev=False,
    )
    shift.add_argument("--data", required=True, type=Path, help="the table (CSV or Parquet)")
    shift.add_argument("--spec", required=True, type=Path, help="the dataset spec (YAML)")
    shift.add_argument("--out", required=True, type=Path, help="where the sample (CSV) goes")
    shift.add_argument("--rows", type=int, default=2000, help="rows drawn (with replacement)")
    shift.add_argument("--seed", type=int, default=7, help="the draw's seed")
    return parser


def run_shift(args: argparse.Namespace) -> int:
    import numpy as np

    from src.dataset.shifts import table_source
    from src.dataset.spec import load_spec
    from src.dataset.table import as_table
    from src.errors import DataError
    from src.fileio import write_text_atomic

    if args.rows < 1:
        raise DataError("--rows must be at least 1")
    spec = load_spec(args.spec)
    source = table_source(args.data, spec)
    rng = np.random.default_rng(args.seed)
    picked = rng.integers(0, len(source.features), args.rows)
    sample = source.features.iloc[picked].reset_index(drop=True)
    shifted, _ = source.shift(sample, source.labels[picked], rng)
    write_text_atomic(args.out, as_table(spec, shifted).to_csv(index=False, lineterminator="\n"))
    print(f"wrote {args.out}: {args.rows:,} holdout rows of {args.data}, {source.shift_text}")
    return 0


def run_infer(args: argparse.Namespace) -> int:
    import re

    from src.dataset.infer import Options, draft_spec, read_for_infer
    from src.errors import DataError
    from src.fileio import write_text_atomic

    started = time.perf_counter()
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", args.data.stem).strip("-") or "dataset"
    table = read_for_infer(args.data)
    print(f"read {args.data}: {table.num_rows:,} rows, {table.num_columns} columns")
    options = Options(
        label=args.label,
        positive=args.positive,
        sensitive=tuple(args.sensitive),
        keep=tuple(args.keep),
        numeric=tuple(args.numeric),
        categorical=tuple(args.categorical),
        inputs=tuple(args.inputs),
        name=name,
    )
    try:
        draft = draft_spec(table, options, source=args.data.name)
    except DataError as exc:  # what the user told infer does not fit the table: say which table
        raise DataError(f"{args.data}: {exc}") from None
    width = max(len(d.column) for d in draft.decisions)
    for decision in draft.decisions:
        print(decision.line(width))
    for note in draft.notes:
        print(f"note: {note}")
    spec = draft.spec
    if spec.row_id:
        print(f"note: row id: '{spec.row_id}' (carried to batch predictions)")
    if spec.event_time:
        print(f"note: event time: '{spec.event_time}' (the demo replays rows in its order)")
    write_text_atomic(args.out, spec.to_yaml())
    inputs, sensitive = len(spec.model_inputs), len(spec.sensitive)
    unused = len(spec.columns) - inputs - sensitive
    seconds = time.perf_counter() - started
    print(
        f"wrote {args.out}: {inputs} model inputs, {sensitive} sensitive, {unused} not used "
        f"({seconds:.1f} s). Read it, then: python -m src.train --data {args.data} "
        f"--spec {args.out}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from src.dataset.check import check_table
    from src.dataset.spec import load_spec

    spec = load_spec(args.spec)
    result = check_table(args.data, spec)
    lines = [line for p in result.problems for line in p.lines(str(args.data))]
    for line in lines[:MAX_SHOWN]:
        print(line, file=sys.stderr)
    hidden = result.faults - min(len(lines), MAX_SHOWN)
    if hidden > 0:
        print(f"{args.data}: ... and {hidden:,} more", file=sys.stderr)
    if result.problems:
        return 2
    print(f"{args.data}: {result.rows:,} rows, every column as {args.spec} says")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from src.fileio import run_cli

    commands = {"infer": run_infer, "check": run_check, "shift": run_shift}
    return run_cli(lambda: commands[args.command](args))


if __name__ == "__main__":
    cli.parse_first(build_parser, inputs=("data", "spec"))
    raise SystemExit(main())
