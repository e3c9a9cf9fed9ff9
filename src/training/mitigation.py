"""Fairness mitigations, measured: each candidate trained on the model's own split, seed and
hyperparameters, and scored on the same validation rows with bootstrap 95% intervals.

Candidates (docs/fairness-mitigation.md says what each costs and buys):
- none: the plain model.
- no_proxy: the model never sees the inputs the proxy check flags (an input that gives a
  sensitive attribute away, as a household role can give sex away): their column is blank while
  the trees are fit, so no split uses it.
- reweighing: Kamiran & Calders sample weights, so that every group of the fairness attributes
  (crossed) carries the same share of positives.
- exponentiated_gradient: fairlearn's reductions approach under equalized odds by the first
  fairness attribute (the constrained one), on the LightGBM model itself. Evaluation only: the
  result is a randomised mixture of boosters.
- threshold_optimizer: fairlearn's per-group thresholds (equal opportunity by the constrained
  attribute). It needs that attribute at decision time: disparate treatment. Evaluation only, and
  only when asked for.

`python -m src.train --mitigation NAME` trains none, no_proxy or reweighing; training code only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from src.choices import TRAINABLE
from src.training.evaluate import (
    GAP_LIMIT,
    auc_of_resamples,
    group_names,
    headline_gap_intervals,
    headline_gaps,
    normal_interval,
    rates_of_resamples,
    signed_gap_draws,
)

# An input that predicts a sensitive attribute this well (cross-validated ROC-AUC) is a proxy.
PROXY_AUC_LIMIT = 0.80
TABLE_DRAWS = 200


def gap_keys(groups: pd.DataFrame) -> tuple[str, ...]:
    """The headline gaps' names for these fairness attributes: `<attribute>_dp`, `_eo`."""
    return tuple(f"{a}_{k}" for a in groups.columns for k in ("dp", "eo"))


def describe_candidate(name: str, attributes: tuple[str, ...]) -> str:
    """What a candidate does, in the spec's own names; the first attribute is the constrained
    one (the reductions and the thresholds equalise it)."""
    first = attributes[0] if attributes else "the sensitive attribute"
    return {
        "none": "the plain model",
        "no_proxy": "without the proxy inputs",
        "reweighing": f"Kamiran-Calders weights over {' x '.join(attributes)}",
        "exponentiated_gradient": f"fairlearn ExponentiatedGradient, equalized odds by {first} "
        "(LightGBM)",
        "threshold_optimizer": f"fairlearn ThresholdOptimizer, equal opportunity by {first}",
    }[name]


@dataclass(frozen=True)
class FitChoice:
    """How a trainable mitigation changes the final fit: inputs left blank, and row weights."""

    name: str
    blanked: tuple[str, ...] = ()
    sample_weight: np.ndarray | None = field(default=None, repr=False)
    attributes: tuple[str, ...] = ()  # the fairness attributes it was chosen for

    def training_matrix(self, matrix: np.ndarray, names: list[str]) -> np.ndarray:
        """The encoded training rows with the blanked inputs set to missing. Serving is unchanged:
        a column that was all missing in training gives the trees nothing to split on."""
        if not self.blanked:
            return matrix
        out = matrix.copy()
        out[:, [names.index(c) for c in self.blanked]] = np.nan
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": describe_candidate(self.name, self.attributes),
            "blanked_inputs": list(self.blanked),
            "reweighted": self.sample_weight is not None,
        }


PLAIN = FitChoice("none")


def proxy_inputs(proxies: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The inputs the proxy check names as the strongest for an attribute it predicts well."""
    flagged = {
        p["strongest_input"]
        for p in proxies.values()
        if p["roc_auc"] is not None and p["roc_auc"] >= PROXY_AUC_LIMIT and p["strongest_input"]
    }
    return tuple(sorted(flagged))


def joint_groups(groups: pd.DataFrame) -> np.ndarray:
    """Every fairness attribute's group, crossed: 'Male / White'."""
    names = [group_names(groups[a]) for a in groups.columns]
    joined = names[0]
    for more in names[1:]:
        joined = joined + " / " + more
    return joined.to_numpy()


def reweighing_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Kamiran & Calders (2012): weight P(group) P(label) / P(group, label), so that group and
    label are independent in the weighted training data. Weights average to 1."""
    frame = pd.DataFrame({"g": groups, "y": np.asarray(y).astype(int)})
    n = len(frame)
    p_group = frame["g"].map(frame["g"].value_counts() / n)
    p_label = frame["y"].map(frame["y"].value_counts() / n)
    p_joint = frame.groupby(["g", "y"])["y"].transform("size") / n
    return (p_group * p_label / p_joint).to_numpy(dtype=np.float64)


def fit_choice(
    name: str, proxies: dict[str, dict[str, Any]], groups: pd.DataFrame, y: np.ndarray
) -> FitChoice:
    """What `python -m src.train --mitigation NAME` changes in the final fit (`groups`: the
    fairness attributes' group names of the training rows)."""
    attributes = tuple(groups.columns)
    if name == "none":
        return FitChoice(name, attributes=attributes)
    if name == "no_proxy":
        return FitChoice(name, blanked=proxy_inputs(proxies), attributes=attributes)
    if name == "reweighing":
        weights = reweighing_weights(y, joint_groups(groups))
        return FitChoice(name, sample_weight=weights, attributes=attributes)
    raise ValueError(f"{name} is not a trainable mitigation (choose from {', '.join(TRAINABLE)})")


# ---- the comparison table -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One candidate on the validation rows: a score to rank by and the decisions it makes."""

    scores: np.ndarray
    decisions: np.ndarray
    seconds: float


def metric_draws(
    y_true: np.ndarray,
    outcome: Outcome,
    sensitive: pd.DataFrame,
    picks: np.ndarray,
) -> dict[str, np.ndarray]:
    """ROC-AUC, accuracy and the headline gaps on every bootstrap resample (`picks`)."""
    decided = outcome.decisions.astype(bool)
    everyone = np.ones(len(y_true), dtype=bool)
    draws = {
        "roc_auc": auc_of_resamples(y_true, outcome.scores, picks),
        "accuracy": rates_of_resamples(everyone, decided == y_true.astype(bool), picks),
    }
    for attribute in sensitive.columns:
        signed = signed_gap_draws(y_true, decided, sensitive[attribute], picks)
        for kind, gaps in signed.items():
            widest = np.nanmax(np.abs(np.stack(gaps)), axis=0) if gaps else np.zeros(len(picks))
            draws[f"{attribute}_{kind}"] = widest
    return draws


def point_metrics(
    y_true: np.ndarray, outcome: Outcome, sensitive: pd.DataFrame
) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y_true, outcome.scores)),
        "accuracy": float((outcome.decisions == y_true).mean()),
        **headline_gaps(y_true, outcome.decisions.astype(float), sensitive),
    }


def _interval(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def _intervals(
    y_true: np.ndarray,
    outcome: Outcome,
    draws: dict[str, np.ndarray],
    sensitive: pd.DataFrame,
    picks: np.ndarray,
) -> dict[str, list[float]]:
    """ROC-AUC and accuracy: percentile intervals; the headline gaps: evaluate's
    HEADLINE_INTERVAL (a percentile interval of an absolute value is biased away from 0)."""
    out = {k: _interval(d) for k, d in draws.items() if k not in gap_keys(sensitive)}
    decided = outcome.decisions.astype(bool)
    out |= headline_gap_intervals(y_true, decided, sensitive, picks)
    return out


def comparison_table(
    y_true: np.ndarray, outcomes: dict[str, Outcome], sensitive: pd.DataFrame, *, seed: int
) -> list[dict[str, Any]]:
    """Every candidate's point metrics with 95% intervals, and its paired differences from the
    plain model (both scored on each resample, so the noise they share cancels)."""
    y_true = np.asarray(y_true).astype(int)
    picks = np.random.default_rng(seed).integers(0, len(y_true), size=(TABLE_DRAWS, len(y_true)))
    draws = {
        name: metric_draws(y_true, outcome, sensitive, picks) for name, outcome in outcomes.items()
    }
    points = {name: point_metrics(y_true, outcome, sensitive) for name, outcome in outcomes.items()}
    rows = []
    for name, outcome in outcomes.items():
        point = points[name]
        intervals = _intervals(y_true, outcome, draws[name], sensitive, picks)
        rows.append(
            {
                "candidate": name,
                "description": describe_candidate(name, tuple(sensitive.columns)),
                "trainable": name in TRAINABLE,
                "train_seconds": round(outcome.seconds, 2),
                "metrics": {k: round(v, 4) for k, v in point.items()},
                "ci95": {k: [round(v, 4) for v in interval] for k, interval in intervals.items()},
                # Paired: both scored on each resample; +- 1.96 standard errors of the paired
                # differences, so the interval holds the difference it is about.
                "vs_none_ci95": {
                    k: [
                        round(v, 4)
                        for v in normal_interval(point[k] - points["none"][k], d - draws["none"][k])
                    ]
                    for k, d in draws[name].items()
                },
            }
        )
    return rows


def _gaps(row: dict[str, Any]) -> list[str]:
    return [k for k in row["metrics"] if k.endswith(("_dp", "_eo"))]


def _opens_a_gap(row: dict[str, Any], plain: dict[str, Any]) -> str | None:
    """A headline gap the candidate widens beyond the noise, or pushes above GAP_LIMIT from
    below it: trading one flagged gap for another is no mitigation."""
    for key in _gaps(plain):
        widened = row["vs_none_ci95"][key][0] > 0
        crossed = row["metrics"][key] > GAP_LIMIT >= plain["metrics"][key]
        if widened or crossed:
            return key
    return None


def recommend(
    rows: list[dict[str, Any]], attribute: str, *, max_accuracy_loss: float = 0.01
) -> dict[str, str]:
    """The candidate a careful team would ship, from the numbers: one that decides without a
    sensitive attribute, narrows `attribute`'s selection-rate gap beyond the bootstrap noise,
    costs at most `max_accuracy_loss` accuracy and opens no other gap; else the plain model."""
    plain = next(r for r in rows if r["candidate"] == "none")
    p = plain["metrics"]
    key = f"{attribute}_dp"
    reasons = []
    clear = []
    for r in rows:
        if not r["trainable"] or r["candidate"] == "none":
            continue
        m = r["metrics"]
        opened = _opens_a_gap(r, plain)
        narrows = f"{r['candidate']} narrows the {attribute} selection-rate gap to {m[key]:.3f}"
        if r["vs_none_ci95"][key][1] >= 0:
            reasons.append(
                f"{r['candidate']} does not narrow the {attribute} selection-rate gap beyond noise"
            )
        elif p["accuracy"] - m["accuracy"] > max_accuracy_loss:
            reasons.append(f"{narrows} but costs {p['accuracy'] - m['accuracy']:.3f} accuracy")
        elif opened:
            reasons.append(f"{narrows} but moves {opened} from {p[opened]:.3f} to {m[opened]:.3f}")
        else:
            clear.append(r)
    if not clear:
        return {
            "candidate": "none",
            "why": "The plain model stays: " + "; ".join(reasons) + ". Per-group thresholds "
            f"would decide with {attribute}, which credit and hiring law largely forbids. The "
            "gaps stay reported, and the registry's gate refuses a model that widens them.",
        }
    best = min(clear, key=lambda r: r["metrics"][key])
    m, ci = best["metrics"], best["vs_none_ci95"][key]
    return {
        "candidate": best["candidate"],
        "why": f"{best['candidate']} ({best['description']}) narrows the {attribute} "
        f"selection-rate gap from {p[key]:.3f} to {m[key]:.3f} (paired 95% CI of the change "
        f"{ci[0]:+.3f} to {ci[1]:+.3f}) for {p['accuracy'] - m['accuracy']:.4f} accuracy and "
        f"{p['roc_auc'] - m['roc_auc']:.4f} ROC-AUC, opens no other gap, and decides without "
        f"{attribute}, unlike per-group thresholds.",
    }
