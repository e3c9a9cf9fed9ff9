"""Training time of each fairness mitigation against the plain model's fit, in the same run.

Every candidate of `python -m src.mitigation_table`, the opt-in per-group thresholds included, on
the trained set's split, seed and hyperparameters. A candidate slower than 10x the plain fit is
reported as such (the goal is missed, not hidden).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import table
from src.choices import CANDIDATES
from src.training.candidates import SLOW_FACTOR, compare


def run(artifacts: Path) -> dict[str, Any]:
    result = compare(artifacts, None, CANDIDATES, log=lambda m: print(f"  {m}", flush=True))
    rows = result["rows"]
    markdown = "\n".join(
        [
            f"Fit time per candidate, {result['val_rows']} validation rows "
            f"({result['train_rows']} training rows), the set in {artifacts}:",
            "",
            table(
                ["candidate", "fit s", "x plain", "accuracy", "sex DP gap", "flag"],
                [
                    [
                        r["candidate"],
                        f"{r['train_seconds']:.2f}",
                        f"{r['slowdown']:.1f}",
                        f"{r['metrics']['accuracy']:.4f}",
                        f"{r['metrics']['sex_dp']:.3f}",
                        f"over {SLOW_FACTOR}x" if r["too_slow"] else "",
                    ]
                    for r in rows
                ],
            ),
        ]
    )
    goals = {
        f"{r['candidate']} trains within {SLOW_FACTOR}x the plain model's time": not r["too_slow"]
        for r in rows
        if r["candidate"] != "none"
    }
    return {"candidates": rows, "markdown": markdown, "goals": goals}
