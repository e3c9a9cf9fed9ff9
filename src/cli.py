"""What every CLI does before anything heavy loads: read its arguments, answer --help, and refuse
a usage error or a missing input file in one line (exit 2). `python -m` runs a module's imports
before its main(), and pandas, SciPy, scikit-learn and LightGBM cost 1-4 s of CPU: a CLI module
defines its parser above those imports and calls `parse_first` when it runs as a program."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

HELP = argparse.ArgumentDefaultsHelpFormatter


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser as every CLI here has one: defaults shown, no abbreviated options (`--metric`
    once passed for `--metrics`)."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HELP, allow_abbrev=False
    )


def missing_input(args: argparse.Namespace, inputs: Sequence[str]) -> str | None:
    """The first input file named in `args` that does not exist, as the one line to print."""
    for name in inputs:
        path = getattr(args, name, None)
        if path is not None and not Path(path).exists():
            return f"error: {path}: no such file"
    return None


def parse_first(
    build_parser: Callable[[], argparse.ArgumentParser],
    inputs: Sequence[str] = (),
    argv: Sequence[str] | None = None,
) -> None:
    """Parse (exiting on --help or a usage error) and check the input files exist; the CLI's
    main() parses again after the heavy imports, at no cost."""
    args = build_parser().parse_args(argv)
    if problem := missing_input(args, inputs):
        print(problem, file=sys.stderr)
        raise SystemExit(2)
