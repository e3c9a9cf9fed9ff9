"""Model evaluation: classification metrics, fairness by sensitive group, and a proxy check."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from src.choices import GAP_LIMIT, MIN_GROUP_CLASS, MIN_GROUP_ROWS
from src.dataset.groups import MISSING_GROUP

BOOTSTRAP_DRAWS = 200


def group_names(groups: pd.Series) -> pd.Series:
    """Group names as text (src/dataset/groups.py made them; missing is a group of its own)."""
    return groups.astype(object).fillna(MISSING_GROUP).astype(str)


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, *, threshold: float = 0.5
) -> dict[str, float]:
    """Validation metrics of one model's probabilities."""
    y_true = np.asarray(y_true)
    predicted = (proba >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y_true, proba)),
        "pr_auc": float(average_precision_score(y_true, proba)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "log_loss": float(log_loss(y_true, proba, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, proba)),
        "predicted_positive_rate": float(predicted.mean()),
    }


def _positives(y_true: np.ndarray, y_pred: np.ndarray) -> int:
    return int(np.sum(y_true))


def _safe_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    # A group holding one class has no ROC-AUC; NaN is reported as null, not as a crash.
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def auc_by_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of every row at once, by the Mann-Whitney rank formula (ties get average ranks,
    as in roc_auc_score); NaN where a row holds one class only."""
    ranks = stats.rankdata(scores, axis=1)
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    rank_sum = np.where(y == 1, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def paired_auc_difference(
    y_true: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    *,
    seed: int,
    draws: int = 1000,
) -> dict[str, Any]:
    """ROC-AUC of `first` minus that of `second` on the same rows, with a paired percentile-
    bootstrap 95% interval: both scored on each resample, so the noise they share cancels."""
    y_true = np.asarray(y_true).astype(int)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(y_true), size=(draws, len(y_true)))
    y = y_true[picks]
    differences = auc_by_rows(y, np.asarray(first)[picks]) - auc_by_rows(
        y, np.asarray(second)[picks]
    )
    differences = differences[np.isfinite(differences)]
    low, high = np.quantile(differences, [0.025, 0.975])
    auc_first, auc_second = roc_auc_score(y_true, first), roc_auc_score(y_true, second)
    difference = float(auc_first - auc_second)
    if low > 0:
        verdict = "first better"
    elif high < 0:
        verdict = "second better"
    else:
        verdict = "within noise"
    return {
        "first": float(auc_first),
        "second": float(auc_second),
        "difference": difference,
        "ci95": [float(low), float(high)],
        "verdict": verdict,
    }


def bootstrap_rate_intervals(
    y_true: np.ndarray,
    predicted: np.ndarray,
    proba: np.ndarray,
    *,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
) -> dict[str, list[float | None]]:
    """95% percentile-bootstrap intervals of one group's TPR, FPR, selection rate and ROC-AUC.

    Vectorised over draws: fairlearn's MetricFrame(n_boot=...) takes ~13 s per attribute here,
    this takes milliseconds, and the point estimates still come from MetricFrame.
    """
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(y_true), size=(draws, len(y_true)))
    y, p = y_true[picks], predicted[picks]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {
            "tpr": (y & p).sum(axis=1) / y.sum(axis=1),
            "fpr": ((1 - y) & p).sum(axis=1) / (1 - y).sum(axis=1),
            "selection_rate": p.mean(axis=1),
            "roc_auc": auc_by_rows(y, proba[picks]),
        }
    out: dict[str, list[float | None]] = {}
    for name, values in rates.items():
        values = values[np.isfinite(values)]
        if len(values) < draws // 2:
            out[name] = [None, None]
        else:
            out[name] = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]
    return out


def _group_entry(
    row: pd.Series,
    ref_row: pd.Series,
    y_true: np.ndarray,
    predicted: np.ndarray,
    proba: np.ndarray,
    members: np.ndarray,
    *,
    seed: int,
) -> dict[str, Any]:
    """One group's rates, intervals and gaps against the reference group."""
    n, positives = int(row["n"]), int(row["positives"])
    small = n < MIN_GROUP_ROWS or min(positives, n - positives) < MIN_GROUP_CLASS
    return {
        "n": n,
        "positives": positives,
        "roc_auc": _none_if_nan(row["roc_auc"]),
        "tpr": _none_if_nan(row["tpr"]),
        "fpr": _none_if_nan(row["fpr"]),
        "selection_rate": float(row["selection_rate"]),
        "ci95": bootstrap_rate_intervals(
            y_true[members], predicted[members], proba[members], seed=seed
        ),
        "demographic_parity_diff": float(abs(row["selection_rate"] - ref_row["selection_rate"])),
        "equal_opportunity_diff": _none_if_nan(abs(row["tpr"] - ref_row["tpr"])),
        "small_group": bool(small),
    }


def group_fairness(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    sensitive_features: pd.Series,
    threshold: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-group n, positives, ROC-AUC, TPR, FPR and selection rate at `threshold` (fairlearn
    MetricFrame, with bootstrap 95% intervals), and the gaps against the largest group."""
    y_true = np.asarray(y_true).astype(int)
    groups = group_names(sensitive_features).to_numpy()
    predicted = (np.asarray(proba) >= threshold).astype(int)
    rates = MetricFrame(
        metrics={
            "n": count,
            "positives": _positives,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "selection_rate": selection_rate,
        },
        y_true=y_true,
        y_pred=predicted,
        sensitive_features=groups,
    )
    aucs = MetricFrame(
        metrics={"roc_auc": _safe_auc}, y_true=y_true, y_pred=proba, sensitive_features=groups
    )
    by_group = rates.by_group.join(aucs.by_group)
    reference = str(by_group["n"].astype(int).idxmax())
    ref_row = by_group.loc[reference]

    out_groups = {
        str(group): _group_entry(
            row, ref_row, y_true, predicted, np.asarray(proba), groups == group, seed=seed
        )
        for group, row in by_group.sort_values("n", ascending=False).iterrows()
    }
    # No maximum over every group here: the headline gaps (headline_gaps) are the one number
    # per attribute, small groups left out by their rule.
    return {"reference_group": reference, "groups": out_groups}


def mitigation_note(attribute: str, report: dict[str, Any], *, proxy: str | None) -> str | None:
    """One sentence on what to try, when a gap against the reference group exceeds GAP_LIMIT."""
    gaps = [
        (name, metric, g[metric], g["small_group"])
        for name, g in report["groups"].items()
        for metric in ("demographic_parity_diff", "equal_opportunity_diff")
        if (g[metric] or 0.0) > GAP_LIMIT
    ]
    if not gaps:
        return None
    # Act first on the largest gap in a group big enough to trust; small groups only if none is.
    worst = max(gaps, key=lambda gap: (not gap[3], gap[2]))
    label = "selection-rate" if worst[1] == "demographic_parity_diff" else "TPR"
    caveat = " (a small group: confirm on more data first)" if worst[3] else ""
    proxy_part = f"without `{proxy}`, its strongest proxy, " if proxy else ""
    return (
        f"{attribute}: the {label} gap for '{worst[0]}' vs '{report['reference_group']}' is "
        f"{worst[2]:.2f}{caveat}. Candidates ({proxy_part}reweighed, reductions, per-group "
        f"thresholds) are measured against each other by `make fairness` "
        f"(docs/fairness-mitigation.md); none is applied unless training asks for it."
    )


def proxy_check(
    inputs: np.ndarray,
    feature_names: list[str],
    sensitive: pd.DataFrame,
    *,
    categorical: list[int],
    seed: int,
    threads: int = 1,
) -> dict[str, dict[str, Any]]:
    """How well the model's (encoded) inputs predict each sensitive attribute: the cross-validated
    ROC-AUC of a small LightGBM separating the attribute's largest group from the rest.
    0.5 means no proxy; near 1.0 means the model could reconstruct the attribute."""
    out: dict[str, dict[str, Any]] = {}
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    for attribute in sensitive.columns:
        values = group_names(sensitive[attribute])
        majority = values.value_counts().idxmax()
        target = (values != majority).to_numpy().astype(int)
        if min(target.sum(), len(target) - target.sum()) < folds.n_splits:
            out[attribute] = {"majority_group": majority, "roc_auc": None, "strongest_input": None}
            continue
        model = lgb.LGBMClassifier(
            n_estimators=100,
            learning_rate=0.1,
            num_leaves=15,
            random_state=seed,
            n_jobs=threads,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        fit_params = {"categorical_feature": categorical}
        proba = cross_val_predict(
            model, inputs, target, cv=folds, method="predict_proba", params=fit_params
        )[:, 1]
        model.fit(inputs, target, **fit_params)
        gains = model.booster_.feature_importance(importance_type="gain")
        out[attribute] = {
            "majority_group": majority,
            "roc_auc": float(roc_auc_score(target, proba)),
            "strongest_input": feature_names[int(np.argmax(gains))],
        }
    return out


def headline_gap_groups(y_true: np.ndarray, sensitive: pd.Series) -> tuple[str, list[str]]:
    """The reference group (the largest) and the other groups big enough to act on: the groups
    the headline gaps compare. Small groups stay in the per-group report, flagged."""
    y_true = np.asarray(y_true).astype(int)
    groups = group_names(sensitive).to_numpy()
    names, sizes = np.unique(groups, return_counts=True)
    reference = str(names[np.argmax(sizes)])
    big = []
    for name, n in zip(names, sizes, strict=True):
        positives = int(y_true[groups == name].sum())
        if (
            name != reference
            and n >= MIN_GROUP_ROWS
            and min(positives, n - positives) >= (MIN_GROUP_CLASS)
        ):
            big.append(str(name))
    return reference, big


def headline_gaps(
    y_true: np.ndarray, proba: np.ndarray, sensitive: pd.DataFrame, *, threshold: float = 0.5
) -> dict[str, float]:
    """The widest demographic-parity (selection rate) and equal-opportunity (TPR) gaps against
    the largest group, among groups big enough (HEADLINE_RULE), per attribute of `sensitive`
    (group names, one column per attribute): `<attribute>_dp`, `<attribute>_eo`. Training's
    report, the card, the mitigation table and the registry's gate all read these, and only
    these."""
    y_true = np.asarray(y_true).astype(int)
    decided = np.asarray(proba) >= threshold
    out: dict[str, float] = {}
    for attribute in sensitive.columns:
        for kind, gaps in signed_gap_draws(y_true, decided[None, :], sensitive[attribute]).items():
            out[f"{attribute}_{kind}"] = max((abs(float(g[0])) for g in gaps), default=0.0)
    return out


def signed_gap_draws(
    y: np.ndarray, decided: np.ndarray, sensitive: pd.Series, picks: np.ndarray | None = None
) -> dict[str, list[np.ndarray]]:
    """Per gap kind, each counted group's rate minus the largest group's, one value per row of
    `decided` (a resample each; `picks` are the rows it drew, None for the rows as they are)."""
    reference, others = headline_gap_groups(y, sensitive)
    groups = group_names(sensitive).to_numpy()
    if picks is not None:
        y, groups = y[picks], groups[picks]
    else:
        y, groups = y[None, :], groups[None, :]
    positives = y.astype(bool)
    out: dict[str, list[np.ndarray]] = {}
    for kind, base in (("dp", None), ("eo", positives)):
        ref = _rate_rows(decided, groups == reference, base)
        out[kind] = [_rate_rows(decided, groups == name, base) - ref for name in others]
    return out


def _rate_rows(decided: np.ndarray, members: np.ndarray, base: np.ndarray | None) -> np.ndarray:
    within = members if base is None else members & base
    with np.errstate(invalid="ignore", divide="ignore"):
        return (decided & within).sum(axis=1) / within.sum(axis=1)


def headline_gap_intervals(
    y_true: np.ndarray, decided: np.ndarray, sensitive: pd.DataFrame, picks: np.ndarray
) -> dict[str, list[float]]:
    """HEADLINE_INTERVAL for every headline gap. A percentile interval of an absolute value is
    biased away from 0 (a gap of 0.001 read [0.003, 0.129]); this one holds its estimate."""
    y_true = np.asarray(y_true).astype(int)
    decided = np.asarray(decided).astype(bool)
    out: dict[str, list[float]] = {}
    for attribute in sensitive.columns:
        points = signed_gap_draws(y_true, decided[None, :], sensitive[attribute])
        draws = signed_gap_draws(y_true, decided[picks], sensitive[attribute], picks)
        for kind in points:
            bounds = [
                _absolute(float(point[0]), float(np.nanstd(draw)))
                for point, draw in zip(points[kind], draws[kind], strict=True)
            ]
            out[f"{attribute}_{kind}"] = [
                max((b[0] for b in bounds), default=0.0),
                max((b[1] for b in bounds), default=0.0),
            ]
    return out


def _absolute(estimate: float, se: float) -> tuple[float, float]:
    """The interval estimate +- 1.96 se, mapped to the absolute value."""
    low, high = estimate - 1.96 * se, estimate + 1.96 * se
    if low <= 0 <= high:
        return 0.0, max(-low, high)
    return min(abs(low), abs(high)), max(abs(low), abs(high))


def normal_interval(estimate: float, draws: np.ndarray) -> list[float]:
    """estimate +- 1.96 bootstrap standard errors: it holds its estimate by construction."""
    se = float(np.nanstd(draws))
    return [estimate - 1.96 * se, estimate + 1.96 * se]
