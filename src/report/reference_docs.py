"""python -m src.report.reference_docs [--check]: copy the reference run's figures into the docs
pages that show them, between markers, so no figure there is typed by hand. `make reference-run`
runs it; a test runs `--check` (exit 1 when a page is behind its run)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference-run"
END = "<!-- end of generated block -->"
# (the page, its block's opening marker, the reference file the block is copied from)
BLOCKS = (
    (
        ROOT / "docs" / "fairness-mitigation.md",
        "<!-- generated from docs/reference-run/mitigation.md by make reference-run: "
        "do not edit -->",
        REFERENCE / "mitigation.md",
    ),
)


def mitigation_block(source: Path) -> str:
    """The reference run's mitigation table and its choice, without the file's title."""
    lines = source.read_text().strip().splitlines()
    body = [line for line in lines if not line.startswith("# ")]
    return "\n".join(body).strip()


def refreshed(page: str, opening: str, block: str) -> str:
    before, rest = page.split(opening, 1)
    _, after = rest.split(END, 1)
    return f"{before}{opening}\n{block}\n{END}{after}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report.reference_docs")
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is behind")
    args = parser.parse_args(argv)
    behind = []
    for page, opening, source in BLOCKS:
        text = page.read_text()
        new = refreshed(text, opening, mitigation_block(source))
        if new != text:
            behind.append(page)
            if not args.check:
                page.write_text(new)
    for page in behind:
        verb = "is behind" if args.check else "refreshed"
        print(
            f"{page.relative_to(ROOT)} {verb} from {REFERENCE.relative_to(ROOT)}/", file=sys.stderr
        )
    return 1 if args.check and behind else 0


if __name__ == "__main__":
    raise SystemExit(main())
