"""Reasons for a decision: each input's exact contribution to a row's score.

LightGBM computes TreeSHAP itself (`pred_contrib=True`): one contribution per model input, in
log-odds, and the expected value last, with no background sample and no estimate. The encoder
makes one matrix column per input, so a contribution is already in the user's column, never in an
encoded or one-hot name. The contributions and the base value add up to the row's raw score, and
the sigmoid of that is the served probability.

Serving builds an Explainer only when a request first asks for reasons: the plain /predict keeps
its speed, and a worker that is never asked never imports LightGBM.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from src.model.encoder import CompiledEncoder

if TYPE_CHECKING:  # serving never imports pandas
    import pandas as pd

# Below this many rows LightGBM's predictor is faster on one thread (thread start-up).
THREADS_FROM = 200


def input_names(encoder: CompiledEncoder) -> list[str]:
    """The model inputs in the matrix's column order."""
    return [c.name for c in encoder.numeric] + [c.name for c in encoder.categorical]


class Explainer:
    """Exact per-row contributions of a served model's inputs."""

    def __init__(self, model_text: str, encoder: CompiledEncoder) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_str=model_text)
        self.names = input_names(encoder)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, inputs + 1): each input's contribution in log-odds, the base value last."""
        threads = 1 if len(matrix) < THREADS_FROM else 2
        return np.asarray(self.booster.predict(matrix, pred_contrib=True, num_threads=threads))


class LazyExplainer:
    """An Explainer made on first use, once, whichever thread asks first."""

    def __init__(self, model_text: str, encoder: CompiledEncoder) -> None:
        self._args = (model_text, encoder)
        self._made: Explainer | None = None
        self._lock = threading.Lock()

    def get(self) -> Explainer:
        if self._made is None:
            with self._lock:
                if self._made is None:
                    self._made = Explainer(*self._args)
        return self._made


def top_reasons(
    contributions: np.ndarray, names: Sequence[str], rows: Sequence[dict[str, Any]], k: int
) -> list[tuple[float, list[dict[str, Any]]]]:
    """Per row: the base value and the k largest contributions by absolute size (ties in the
    matrix's column order), each with the row's value as sent."""
    out = []
    inputs = contributions[:, :-1]
    order = np.argsort(-np.abs(inputs), axis=1, kind="stable")[:, :k]
    for row, picked, values, base in zip(
        rows, order.tolist(), inputs.tolist(), contributions[:, -1].tolist(), strict=True
    ):
        reasons = [
            {"column": names[j], "value": row.get(names[j]), "contribution": values[j]}
            for j in picked
        ]
        out.append((base, reasons))
    return out


# --- the global picture: the training summary and the monitoring window ------------------------


def mean_abs(contributions: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Mean |contribution| per input, in the matrix's order."""
    values = np.abs(contributions[:, : len(names)]).mean(axis=0)
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def shares(summary: dict[str, float]) -> dict[str, float]:
    """Each input's share of the total mean |contribution| (0 when all are 0)."""
    total = sum(summary.values())
    return {name: (v / total if total else 0.0) for name, v in summary.items()}


@dataclass(frozen=True)
class GroupContributions:
    """One sensitive attribute: each group's mean contribution per input, and where the gap in
    mean score between a group and the reference (largest) group comes from."""

    reference_group: str
    groups: dict[str, dict[str, Any]]  # group -> {rows, mean_score, contributions: {input: mean}}

    def gap_sources(self, group: str, top: int = 3) -> list[tuple[str, float]]:
        """The inputs whose mean contributions differ most between `group` and the reference:
        these differences add up exactly to the gap in mean score."""
        ours = self.groups[group]["contributions"]
        theirs = self.groups[self.reference_group]["contributions"]
        gaps = [(name, ours[name] - theirs[name]) for name in ours]
        return sorted(gaps, key=lambda item: (-abs(item[1]), item[0]))[:top]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference_group": self.reference_group,
            "groups": self.groups,
            "gap_sources": {
                g: [{"column": n, "difference": d} for n, d in self.gap_sources(g)]
                for g in self.groups
                if g != self.reference_group
            },
        }


def by_group(
    contributions: np.ndarray, names: Sequence[str], groups: pd.Series
) -> GroupContributions:
    """Mean contribution of each input per group of one sensitive attribute."""
    labels = groups.to_numpy()
    scores = contributions.sum(axis=1)
    out: dict[str, dict[str, Any]] = {}
    for group in sorted(set(labels.tolist()), key=str):
        mask = labels == group
        means = contributions[mask, : len(names)].mean(axis=0)
        out[str(group)] = {
            "rows": int(mask.sum()),
            "mean_score": float(scores[mask].mean()),
            "contributions": {n: float(v) for n, v in zip(names, means, strict=True)},
        }
    reference = max(out, key=lambda g: (out[g]["rows"], g))
    return GroupContributions(reference, out)
