"""Model evaluation: classification metrics, fairness by sensitive group, and a proxy check."""

from __future__ import annotations

from collections.abc import Iterator
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


# A bootstrap resample is a multiplicity per row: counting them (not gathering the resampled rows)
# makes a rate a dot product and a ROC-AUC a cumulative sum, exactly (every sum below is of whole
# counts, so the figures are the ones the gathered rows give, to the last bit).
RESAMPLE_CELLS = 4_000_000  # draws x rows counted at once (memory: 8 bytes a cell)


def resample_counts(picks: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """How many times each of n rows is in each resample (a row of `picks` each), a block of
    resamples at a time."""
    block = max(1, RESAMPLE_CELLS // max(n, 1))
    for start in range(0, len(picks), block):
        part = picks[start : start + block]
        offsets = (np.arange(len(part)) * n)[:, None]
        yield np.bincount((part + offsets).ravel(), minlength=len(part) * n).reshape(-1, n)


def auc_of_resamples(y: np.ndarray, scores: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """ROC-AUC of every resample (a row of `picks`) of (y, scores): the Mann-Whitney count of
    (positive, negative) pairs in order, ties counting half, as roc_auc_score does; NaN where a
    resample holds one class only."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(scores, kind="stable")
    ranked = np.asarray(scores)[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # tie groups
    positive = y[order]
    out = []
    for counts in resample_counts(picks, len(y)):
        counts = counts[:, order].astype(np.float64)
        pos = np.add.reduceat(np.where(positive, counts, 0.0), starts, axis=1)
        neg = np.add.reduceat(np.where(positive, 0.0, counts), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        pairs = (pos * (below + 0.5 * neg)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(pairs / (pos.sum(axis=1) * neg.sum(axis=1)))
    return np.concatenate(out) if out else np.empty(0)


def rates_of_resamples(members: np.ndarray, hits: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Per resample: the share of `members` rows that are `hits` (both boolean per row)."""
    members = np.asarray(members, dtype=np.float64)
    hits = np.asarray(hits, dtype=np.float64) * members
    out = []
    for counts in resample_counts(picks, len(members)):
        counts = counts.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((counts @ hits) / (counts @ members))
    return np.concatenate(out) if out else np.empty(0)


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
    differences = auc_of_resamples(y_true, np.asarray(first), picks) - auc_of_resamples(
        y_true, np.asarray(second), picks
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
    y, p = np.asarray(y_true).astype(bool), np.asarray(predicted).astype(bool)
    everyone = np.ones(len(y), dtype=bool)
    rates = {
        "tpr": rates_of_resamples(y, p, picks),
        "fpr": rates_of_resamples(~y, p, picks),
        "selection_rate": rates_of_resamples(everyone, p, picks),
        "roc_auc": auc_of_resamples(y, proba, picks),
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
        for kind, gaps in signed_gap_draws(y_true, decided, sensitive[attribute]).items():
            out[f"{attribute}_{kind}"] = max((abs(float(g[0])) for g in gaps), default=0.0)
    return out


def signed_gap_draws(
    y: np.ndarray, decided: np.ndarray, sensitive: pd.Series, picks: np.ndarray | None = None
) -> dict[str, list[np.ndarray]]:
    """Per gap kind, each counted group's rate minus the largest group's: one value for the rows
    as they are, or one per resample (`picks`, a row of drawn rows each). `decided` is each
    row's decision."""
    reference, others = headline_gap_groups(y, sensitive)
    groups = group_names(sensitive).to_numpy()
    decided = np.asarray(decided).astype(bool)
    picks = np.arange(len(decided))[None, :] if picks is None else picks
    everyone = np.ones(len(decided), dtype=bool)
    out: dict[str, list[np.ndarray]] = {}
    for kind, base in (("dp", everyone), ("eo", np.asarray(y).astype(bool))):
        ref = rates_of_resamples((groups == reference) & base, decided, picks)
        out[kind] = [
            rates_of_resamples((groups == name) & base, decided, picks) - ref for name in others
        ]
    return out


def headline_gap_intervals(
    y_true: np.ndarray, decided: np.ndarray, sensitive: pd.DataFrame, picks: np.ndarray
) -> dict[str, list[float]]:
    """HEADLINE_INTERVAL for every headline gap. A percentile interval of an absolute value is
    biased away from 0 (a gap of 0.001 read [0.003, 0.129]); this one holds its estimate."""
    y_true = np.asarray(y_true).astype(int)
    decided = np.asarray(decided).astype(bool)
    out: dict[str, list[float]] = {}
    for attribute in sensitive.columns:
        points = signed_gap_draws(y_true, decided, sensitive[attribute])
        draws = signed_gap_draws(y_true, decided, sensitive[attribute], picks)
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
