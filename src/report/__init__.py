"""The human-readable side of an artifact set: the model card, fairness.md, the mitigation table,
and the pages the service shows. It reads an artifact set (or its files) and nothing else: never
the registry, never the training code's state. Heavy imports (matplotlib) wait for `documents`.
"""

from __future__ import annotations

import json

FAIRNESS_FILE = "fairness.md"


def documents(files: dict[str, bytes]) -> dict[str, bytes]:
    """The card and fairness.md, rendered from a set's other files (training adds them to the
    set before it is written, so they are hashed like every file)."""
    from src.model.artifacts import CARD_FILE, METRICS_FILE
    from src.report.card import render
    from src.report.fairness import fairness_markdown

    metrics = json.loads(files[METRICS_FILE])
    return {
        CARD_FILE: render(files).encode(),
        FAIRNESS_FILE: fairness_markdown(metrics).encode(),
    }
