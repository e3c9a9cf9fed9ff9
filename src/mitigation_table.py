"""Every fairness mitigation on the trained model's own split, seed and hyperparameters: one table
(ROC-AUC, accuracy, DP and EO gaps for each fairness attribute of the spec, bootstrap 95%
intervals) and a choice.

    python -m src.mitigation_table --artifacts artifacts/

reads the set's metrics.json (data, seed, split, hyperparameters) and its dataset spec, checks
the data is the file the set was trained on, and writes mitigation.json, mitigation.md and the
card's section beside it (src/training/candidates.py measures, src/report/mitigation.py renders).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

from src import cli
from src.choices import CANDIDATES, DEFAULT_CANDIDATES, OPT_IN


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.mitigation_table", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="the trained set to compare on"
    )
    parser.add_argument("--data", type=Path, help="default: the path in the set's metrics.json")
    parser.add_argument(
        "--candidates",
        nargs="+",
        choices=CANDIDATES,
        default=list(DEFAULT_CANDIDATES),
        help=f"which to compare ({', '.join(OPT_IN)} only when named: it decides with the "
        "sensitive attribute)",
    )
    return parser


def attach_to_registered(artifacts: Path, outputs: dict[str, str]) -> Path | None:
    """The table beside the set's copy in the registry (when it is registered there), so the
    served card shows it too; recorded in the registry's history with each file's hash."""
    from src.errors import DataError
    from src.fileio import write_text_atomic
    from src.model.artifacts import model_version, read_manifest
    from src.registry.core import opened_registry
    from src.settings import Settings

    version = model_version(read_manifest(artifacts))
    try:
        with opened_registry(Settings()) as registry:
            registry.get(version)
            folder = registry.folder(version)
            for name, text in outputs.items():
                write_text_atomic(folder / name, text)
            digests = {n: hashlib.sha256(t.encode()).hexdigest() for n, t in outputs.items()}
            registry.note(
                "attached",
                version,
                actor="python -m src.mitigation_table",
                reason="the fairness mitigations, measured",
                details=digests,
            )
            return folder
    except DataError:  # not registered here: the artifacts folder holds the table
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from src.fileio import run_cli

    def body() -> int:
        from src.training.threads import configure_openmp

        configure_openmp()  # before LightGBM loads, just below
        from src.errors import DataError
        from src.fileio import dumps_json, write_text_atomic
        from src.model.artifacts import METRICS_FILE
        from src.report.mitigation import (
            MITIGATION_JSON,
            MITIGATION_MD,
            mitigation_section,
            table_markdown,
        )
        from src.report.pages import MITIGATION_HTML
        from src.training.candidates import compare

        if not (args.artifacts / METRICS_FILE).is_file():
            raise DataError(f"{args.artifacts}: no {METRICS_FILE} (train first: make train)")
        result = compare(
            args.artifacts,
            args.data,
            args.candidates,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        outputs = {
            MITIGATION_JSON: dumps_json(result),
            MITIGATION_MD: table_markdown(result),
            MITIGATION_HTML: mitigation_section(result),  # the card's section, rendered once
        }
        for name, text in outputs.items():
            write_text_atomic(args.artifacts / name, text)
        print(outputs[MITIGATION_MD])
        if where := attach_to_registered(args.artifacts, outputs):
            print(f"also beside the registered set in {where}: /report shows the table")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    cli.parse_first(build_parser, inputs=("artifacts", "data"))
    raise SystemExit(main())
