"""python -m src.predict --data TABLE --out PREDICTIONS [--artifacts DIR] [--log]

Batch scoring: every row of a CSV or Parquet table by the registry's champion (or the set in
--artifacts), checked by the same rules and messages as /predict. A row the service would refuse
goes to the rejects file with its row number and reason; the run never stops for it. The output
holds each scored row's number, the row id (when the spec names one), the probability, the
class and the model version (and the prediction id, with --log). Exit codes: 0 done (rejects
included); 2 bad input; 3 the registry's database unreachable.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.predict", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--data", required=True, type=Path, help="the table to score (CSV or Parquet)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="the predictions (CSV, or Parquet by its suffix)"
    )
    parser.add_argument(
        "--rejects", type=Path, help="refused rows and why (default: <out>.rejects.csv)"
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        help="score with this artifact set (default: the registry's champion)",
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help="record the decisions in the prediction log, as /predict does",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for the trees (default: every CPU)"
    )
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(args: argparse.Namespace) -> Any:
    """The predictor: the set in --artifacts, or the registry's champion (verified either way)."""
    from src.service.state import StoreBuilds, verified_predictor
    from src.settings import Settings

    settings = Settings(LOG_PREDICTIONS=False)
    if args.artifacts is not None:
        return verified_predictor(args.artifacts, settings)[0]
    from src.registry.core import champion_folder, opened_registry

    with opened_registry(settings) as registry:
        champion, folder = champion_folder(registry)
        return verified_predictor(folder, settings, StoreBuilds(registry, champion))[0]


def write_table(path: Path, table: Any) -> None:
    """CSV or Parquet by the suffix, written beside and moved into place: never half a file."""
    import os
    import tempfile

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from src.dataset.table import is_parquet

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if is_parquet(path):
            pq.write_table(table, tmp)
        else:
            pacsv.write_csv(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa

    from src.dataset.table import label_encoding, missing_columns, read_arrow, table_columns
    from src.errors import DataError
    from src.model.batch import encode_table, refusal_reasons, score

    started = time.perf_counter()
    predictor = load(args)
    spec = predictor.spec
    names = table_columns(args.data)
    if absent := missing_columns(spec, names):
        raise DataError(f"{args.data}: missing column(s) {', '.join(absent)}")
    dictionary = [c.name for c in spec.columns if c.kind in ("categorical", "boolean")]
    table = read_arrow(args.data, names, spec.accepted, dictionary=dictionary)
    n = table.num_rows
    _say(
        f"read {n:,} rows of {args.data} in {time.perf_counter() - started:.1f} s "
        f"(model {predictor.version}, dataset {spec.name})"
    )
    encoded = encode_table(predictor.encoder, table)
    kept = np.flatnonzero(~encoded.refused)
    matrix = encoded.matrix if len(kept) == n else encoded.matrix[kept]
    _say(f"checked and encoded: {len(kept):,} to score, {n - len(kept):,} refused")
    progress = _progress(len(kept))
    probabilities = score(predictor.probabilities, matrix, threads=args.threads, progress=progress)
    columns: dict[str, Any] = {"row": pa.array(kept + 1)}
    if spec.row_id and spec.row_id in table.column_names:
        columns[spec.row_id] = table.column(spec.row_id).take(pa.array(kept))
    columns |= {
        "probability": pa.array(probabilities),
        "class": pa.array((probabilities >= predictor.threshold).astype(np.int8)),
        "model_version": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(kept), dtype=np.int32)), pa.array([predictor.version])
        ),
    }
    if args.log:
        columns["prediction_id"] = pa.array(_log(predictor, table, kept, matrix, probabilities))
    write_table(args.out, pa.table(columns))
    rejects = args.rejects or args.out.with_name(args.out.name + ".rejects.csv")
    refused = np.flatnonzero(encoded.refused)
    reasons = list(refusal_reasons(spec, predictor.adapter, table, refused))
    write_table(
        rejects, pa.table({"row": [r + 1 for r, _ in reasons], "reason": [w for _, w in reasons]})
    )
    extra = [c for c in names if c not in spec.accepted and not label_encoding(spec, [c])]
    for name in extra:
        _say(f"note: ignored column '{name}' (not in the spec)")
    _say(
        f"wrote {args.out} ({len(kept):,} rows) and {rejects} ({len(refused):,} refused) in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


def _progress(total: int) -> Any:
    started = time.perf_counter()
    every = max(total // 10, 1)
    last = [0]

    def show(done: int) -> None:
        if done - last[0] >= every or done == total:
            last[0] = done
            spent = time.perf_counter() - started
            _say(f"  scored {done:,}/{total:,} rows ({spent:.1f} s)")

    return show


def _log(predictor: Any, table: Any, kept: Any, matrix: Any, probabilities: Any) -> list[str]:
    """The scored rows into the prediction log, as /predict would record them: a request per
    10,000 rows, its prediction ids returned for the output (labels come back with them)."""
    from src.loop.batch import log_scored

    return log_scored(predictor, table, kept, matrix, probabilities)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from src.fileio import run_cli

    def body() -> int:
        from src.errors import DataError

        if args.threads is not None and args.threads < 1:
            raise DataError(f"--threads must be at least 1, got {args.threads}")
        if args.data.resolve() == args.out.resolve():
            raise DataError(f"--out {args.out} is the table itself")
        return run(args)

    return run_cli(body)


if __name__ == "__main__":
    cli.parse_first(build_parser, inputs=("data", "artifacts"))
    raise SystemExit(main())
