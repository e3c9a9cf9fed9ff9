"""Turn the service's own prediction log into what the monitor reads: hourly metrics points and a
drift report of the latest window against the training reference.

`python -m src.monitor_window --reference artifacts/ --out-dir artifacts/live/` (the database is
DATABASE_URL, or the service's default SQLite file, or --database-url).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from src.artifacts import REFERENCE_FILE
from src.data import load_dataset
from src.drift import DEFAULT_THRESHOLD
from src.errors import DataError
from src.fileio import dumps_json, run_cli, write_text_atomic
from src.loop.labels import purge_unmatched
from src.loop.tables import make_engine
from src.loop.windows import DEFAULT_WINDOW_HOURS, build_window_files
from src.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.monitor_window", description=__doc__)
    parser.add_argument("--database-url", help="default: DATABASE_URL or the service's SQLite file")
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path("artifacts"),
        help=f"the artifact folder holding {REFERENCE_FILE}",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts/live"))
    parser.add_argument("--window-hours", type=int, default=DEFAULT_WINDOW_HOURS)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)

    def body() -> int:
        settings = Settings()
        url = args.database_url or settings.prediction_log_url
        if args.window_hours < 1:
            raise DataError(f"--window-hours must be at least 1, got {args.window_hours}")
        reference = load_dataset(args.reference / REFERENCE_FILE, require_target=False).features
        engine = make_engine(url)
        try:
            now = datetime.now(UTC)
            keep = timedelta(hours=settings.label_pending_hours)
            purged = purge_unmatched(engine, now=now, keep=keep)
            if purged:
                print(f"purged {purged} labels whose prediction never arrived within {keep}")
            points, report = build_window_files(
                engine, reference, window_hours=args.window_hours, threshold=args.threshold
            )
        except SQLAlchemyError as exc:
            raise DataError(
                f"{url}: cannot read the prediction log ({type(exc).__name__})"
            ) from None
        finally:
            engine.dispose()
        if not points:
            raise DataError(f"{url}: no hour has labels of both classes yet (POST /feedback)")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            args.out_dir / "metrics_history.jsonl", "".join(json.dumps(p) + "\n" for p in points)
        )
        write_text_atomic(args.out_dir / "drift_report.json", dumps_json(report))
        print(
            f"{len(points)} hourly points, drift over the last {args.window_hours} h "
            f"({report['window']['rows']} rows): {'yes' if report['overall_drift'] else 'no'}; "
            f"wrote {args.out_dir}/metrics_history.jsonl and drift_report.json"
        )
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
