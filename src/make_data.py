"""Build the project's own data files from the raw UCI Adult files, deterministically
(src/dataset/adult.py; data/README.md says the scenario of each file)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from src import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.make_data", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--raw-dir", type=Path, default=Path("data/raw"), help="the raw UCI files (adult.*)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="where data/ goes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from src.dataset.adult import build_all
        from src.fileio import write_text_atomic

        for name, text in build_all(args.raw_dir).items():
            write_text_atomic(args.out_dir / name, text)
            print(f"wrote {args.out_dir / name}")
        return 0

    from src.fileio import run_cli

    return run_cli(body)


if __name__ == "__main__":
    cli.parse_first(build_parser, inputs=("raw_dir",))
    raise SystemExit(main())
