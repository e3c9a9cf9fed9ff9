"""The card's charts: inline SVG from matplotlib, stable from run to run, readable at 390 px."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from src.choices import GAP_LIMIT

MODEL_COLOR, BASELINE_COLOR, ALERT_COLOR, MUTED = "#1f5fa8", "#9a9a9a", "#c0392b", "#6b7280"
plt.rcParams.update(
    {
        "svg.fonttype": "none",  # text stays text: smaller, selectable, the page's own font
        "svg.hashsalt": "model-card",  # stable element ids: the same inputs give the same page
        "font.size": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.25,
    }
)


def svg(fig: plt.Figure) -> str:
    """The figure as inline SVG, made to scale with its container."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    start = text.index("<svg")
    return text[start:].replace("<svg ", '<svg role="img" preserveAspectRatio="xMidYMid meet" ', 1)


# --- figures ------------------------------------------------------------------------------------


def roc_figure(
    y: np.ndarray, model: np.ndarray, baseline: np.ndarray, metrics: dict[str, Any]
) -> str:
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    for scores, label, color in (
        (model, f"LightGBM (AUC {metrics['roc_auc']:.3f})", MODEL_COLOR),
        (baseline, f"baseline (AUC {metrics['baseline']['roc_auc']:.3f})", BASELINE_COLOR),
    ):
        fpr, tpr, _ = roc_curve(y, scores)
        ax.plot(fpr, tpr, color=color, label=label)
    ax.plot([0, 1], [0, 1], color=MUTED, linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right", frameon=False)
    return svg(fig)


def pr_figure(
    y: np.ndarray, model: np.ndarray, baseline: np.ndarray, metrics: dict[str, Any]
) -> str:
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    for scores, label, color in (
        (model, f"LightGBM (AP {metrics['pr_auc']:.3f})", MODEL_COLOR),
        (baseline, f"baseline (AP {metrics['baseline']['pr_auc']:.3f})", BASELINE_COLOR),
    ):
        precision, recall, _ = precision_recall_curve(y, scores)
        ax.plot(recall, precision, color=color, label=label)
    ax.axhline(
        y.mean(), color=MUTED, linestyle=":", linewidth=1, label=f"positive rate {y.mean():.2f}"
    )
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", ylim=(0, 1.02))
    ax.legend(loc="lower left", frameon=False)
    return svg(fig)


def calibration_figure(y: np.ndarray, model: np.ndarray) -> str:
    observed, predicted = calibration_curve(y, model, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot([0, 1], [0, 1], color=MUTED, linestyle=":", linewidth=1, label="perfect")
    ax.plot(predicted, observed, marker="o", color=MODEL_COLOR, label="LightGBM (deciles)")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
        title="Calibration (reliability)",
    )
    ax.legend(loc="upper left", frameon=False)
    return svg(fig)


def score_figure(
    y: np.ndarray, model: np.ndarray, threshold: float, meanings: tuple[str, str]
) -> str:
    """The score's distribution in each true class (`meanings`: the negative's, the
    positive's, in the spec's words)."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    bins = np.linspace(0, 1, 26)
    ax.hist(
        model[y == 0],
        bins=bins,
        alpha=0.6,
        color=BASELINE_COLOR,
        label=meanings[0],
        density=True,
    )
    ax.hist(model[y == 1], bins=bins, alpha=0.6, color=MODEL_COLOR, label=meanings[1], density=True)
    ax.axvline(
        threshold, color=ALERT_COLOR, linestyle="--", linewidth=1, label=f"threshold {threshold}"
    )
    ax.set(xlabel="predicted probability", ylabel="density", title="Scores by true class")
    ax.legend(frameon=False)
    return svg(fig)


def hpo_figure(history: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 2.8))
    trials = [h["trial"] for h in history]
    scores = [h["cv_roc_auc"] for h in history]
    best = int(np.argmax(scores))
    ax.errorbar(
        trials,
        scores,
        yerr=[h["cv_std"] for h in history],
        fmt="o",
        color=MODEL_COLOR,
        ecolor="#a9c1e0",
        capsize=2,
        label="trial (mean ± sd over folds)",
    )
    ax.plot(
        trials[best],
        scores[best],
        marker="*",
        markersize=14,
        color=ALERT_COLOR,
        linestyle="",
        label="chosen",
    )
    ax.set(xlabel="trial", ylabel="CV ROC-AUC", title="Randomized search")
    ax.legend(frameon=False, loc="lower right")
    return svg(fig)


def fairness_figure(attribute: str, report: dict[str, Any]) -> str:
    groups = list(report["groups"])
    measures = ("roc_auc", "tpr", "fpr", "selection_rate")
    labels = ("ROC-AUC", "TPR", "FPR", "selection rate")
    fig, axes = plt.subplots(
        1, 4, figsize=(9, 1.1 + 0.32 * len(groups)), sharey=True, layout="constrained"
    )
    positions = np.arange(len(groups))
    for ax, measure, label in zip(axes, measures, labels, strict=True):
        values, low, high, colors = [], [], [], []
        for name in groups:
            g = report["groups"][name]
            value = g[measure] if g[measure] is not None else np.nan
            lo, hi = g["ci95"].get(measure, [None, None])
            values.append(value)
            low.append(value - lo if lo is not None else 0)
            high.append(hi - value if hi is not None else 0)
            colors.append(BASELINE_COLOR if g["small_group"] else MODEL_COLOR)
        ax.barh(
            positions, values, xerr=[low, high], color=colors, ecolor="#333", capsize=2, height=0.6
        )
        ax.set(title=label, xlim=(0, 1.05))
    axes[0].invert_yaxis()  # shared: once inverts them all (the reference group on top)
    axes[0].set_yticks(
        positions,
        [f"{g}{' (small)' if report['groups'][g]['small_group'] else ''}" for g in groups],
    )
    fig.suptitle(f"{attribute}: by group, 95% bootstrap intervals (grey: small group)", fontsize=10)
    return svg(fig)


def importance_figure(importances: pd.DataFrame) -> str:
    ordered = importances.sort_values("mean_abs_shap")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    axes[0].barh(ordered["feature"], ordered["gain"] / ordered["gain"].sum(), color=MODEL_COLOR)
    axes[0].set(title="LightGBM gain (share)")
    axes[1].barh(ordered["feature"], ordered["mean_abs_shap"], color="#3b8f6b")
    axes[1].set(title="mean |SHAP| (log-odds)")
    return svg(fig)


def mitigation_figure(rows: list[dict[str, Any]], attribute: str) -> str:
    """Accuracy against `attribute`'s selection-rate gap, one point per candidate, 95%
    intervals."""
    key = f"{attribute}_dp"
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for row in rows:
        m, ci = row["metrics"], row["ci95"]
        color = MODEL_COLOR if row["trainable"] else BASELINE_COLOR
        ax.errorbar(
            m[key],
            m["accuracy"],
            xerr=[[m[key] - ci[key][0]], [ci[key][1] - m[key]]],
            yerr=[[m["accuracy"] - ci["accuracy"][0]], [ci["accuracy"][1] - m["accuracy"]]],
            fmt="o",
            color=color,
            ecolor=color,
            capsize=2,
        )
        point = (m[key], m["accuracy"])
        ax.annotate(row["candidate"], point, xytext=(5, 4), textcoords="offset points")
    ax.axvline(GAP_LIMIT, color=ALERT_COLOR, linestyle=":", linewidth=1)
    ax.set(
        xlabel=f"{attribute} selection-rate gap (lower is fairer)",
        ylabel="accuracy",
        title="Mitigations: accuracy against gap (grey: evaluation only)",
    )
    return svg(fig)
