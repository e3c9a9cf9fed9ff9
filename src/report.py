"""A model card as one self-contained HTML page: inline SVG plots (matplotlib), inline CSS, no JS.

Training builds the card into the artifact set (model_card.html, hashed like every file), so it
always describes the model it ships with; the service fills in its live parts (the served model's
identity, the monitoring) when it serves /report. `python -m src.report --artifacts DIR` renders the
whole page to a file, with the drift report and plan you name.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.report", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="the trained set to describe"
    )
    parser.add_argument("--out", type=Path, help="the page (default: <artifacts>/report.html)")
    parser.add_argument("--drift", type=Path, help="a drift report to show, with its provenance")
    parser.add_argument("--plan", type=Path, help="an agent plan (YAML) to show")
    parser.add_argument("--live", type=Path, help="the live loop's output folder, if it ran")
    return parser


if __name__ == "__main__":  # parse first, import after: --help and a missing file answer at once
    cli.parse_first(build_parser, inputs=("artifacts", "drift", "plan"))

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from src.artifacts import (
    IMPORTANCES_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    model_version,
    read_manifest,
    read_verified,
)
from src.errors import ArtifactError, DataError
from src.evaluate import FAIRNESS_ATTRIBUTES, GAP_LIMIT, HEADLINE_INTERVAL, HEADLINE_RULE
from src.fileio import run_cli, write_text_atomic
from src.pages import (
    BADGES_SLOT,
    MITIGATION_SLOT,
    MONITORING_SLOT,
    REGISTRY_SLOT,
    SERVED_SLOT,
    badge,
    esc,
    fill,
    fmt,
    monitoring_badges,
    monitoring_section,
    read_monitoring,
    registry_section,
    served_block,
    table,
)

MITIGATION_JSON = "mitigation.json"  # written beside the set by python -m src.mitigation_table
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


def score_figure(y: np.ndarray, model: np.ndarray, threshold: float) -> str:
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    bins = np.linspace(0, 1, 26)
    ax.hist(
        model[y == 0],
        bins=bins,
        alpha=0.6,
        color=BASELINE_COLOR,
        label="income <= 50K",
        density=True,
    )
    ax.hist(
        model[y == 1], bins=bins, alpha=0.6, color=MODEL_COLOR, label="income > 50K", density=True
    )
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


# --- the page -----------------------------------------------------------------------------------

CSS = (Path(__file__).parent / "report.css").read_text()


def mitigation_figure(rows: list[dict[str, Any]]) -> str:
    """Accuracy against the sex selection-rate gap, one point per candidate, 95% intervals."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for row in rows:
        m, ci = row["metrics"], row["ci95"]
        color = MODEL_COLOR if row["trainable"] else BASELINE_COLOR
        ax.errorbar(
            m["sex_dp"],
            m["accuracy"],
            xerr=[[m["sex_dp"] - ci["sex_dp"][0]], [ci["sex_dp"][1] - m["sex_dp"]]],
            yerr=[[m["accuracy"] - ci["accuracy"][0]], [ci["accuracy"][1] - m["accuracy"]]],
            fmt="o",
            color=color,
            ecolor=color,
            capsize=2,
        )
        point = (m["sex_dp"], m["accuracy"])
        ax.annotate(row["candidate"], point, xytext=(5, 4), textcoords="offset points")
    ax.axvline(GAP_LIMIT, color=ALERT_COLOR, linestyle=":", linewidth=1)
    ax.set(
        xlabel="sex selection-rate gap (lower is fairer)",
        ylabel="accuracy",
        title="Mitigations: accuracy against gap (grey: evaluation only)",
    )
    return svg(fig)


def mitigation_section(result: dict[str, Any]) -> str:
    """The comparison of mitigations (python -m src.mitigation_table), when it was run."""
    keys = ("roc_auc", "accuracy", "sex_dp", "sex_eo", "race_dp", "race_eo")

    def cell(row: dict[str, Any], key: str) -> str:
        low, high = row["ci95"][key]
        value = row["metrics"][key]
        shown = _gap(value) if key.endswith(("_dp", "_eo")) else fmt(value)
        return f"{shown} <small>[{fmt(low)}, {fmt(high)}]</small>"

    rows = [
        [
            esc(row["candidate"])
            + ("" if row["trainable"] else " <small>(evaluation only)</small>"),
            *[cell(row, k) for k in keys],
            f"{row['train_seconds']:.2f} s ({row['slowdown']:.1f}x"
            + (", <b>over 10x</b>)" if row["too_slow"] else ")"),
        ]
        for row in result["rows"]
    ]
    choice = result["recommendation"]
    table_html = table(
        ["candidate", "ROC-AUC", "accuracy", "sex DP", "sex EO", "race DP", "race EO", "fit"],
        rows,
    )
    return (
        '<section id="mitigations"><h2>Fairness mitigations, measured</h2>'
        f"<p>{result['val_rows']} validation rows, the model's split and seed; 95% intervals "
        f"(gaps: {esc(HEADLINE_INTERVAL)}). Each gap is {esc(HEADLINE_RULE)}; DP is the selection "
        "rate, EO the true-positive rate. Per-group thresholds decide with sex (disparate "
        "treatment, restricted in credit and hiring): evaluation only, never served. Measured "
        "after training (<code>make fairness</code>), so not part of the set's manifest.</p>"
        f"{table_html}{mitigation_figure(result['rows'])}"
        f"<p><b>Choice: {esc(choice['candidate'])}.</b> {esc(choice['why'])}</p></section>"
    )


def _kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><b>{value}</b><span>{esc(label)}</span></div>'


def build_card(
    metrics: dict[str, Any],
    predictions: pd.DataFrame,
    importances: pd.DataFrame,
    mitigations: dict[str, Any] | None = None,
) -> str:
    """The model card, built at training time from what training measured. Its live parts (the
    served model's identity and the monitoring) are slots, filled when the page is served."""
    # The verdict and the headline figures first; how they were made after; provenance last.
    sections = [
        _summary_section(metrics),
        MONITORING_SLOT,
        _quality_section(metrics, predictions),
        _fairness_section(metrics),
        mitigation_section(mitigations) if mitigations else MITIGATION_SLOT,
        _importance_section(importances),
        _details_section(metrics),
        _limits_section(metrics),
        REGISTRY_SLOT,
        SERVED_SLOT,
    ]
    # No time in the card: it is part of the set, whose version is what was trained, not when
    # (the served part and the history say when).
    meta = f"git {esc(metrics.get('git_sha') or 'unknown')} · seed {metrics['seed']}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Model card: adult income classifier</title>"
        f"<style>{CSS}</style></head><body>"
        '<header><div class="inner"><h1>Model card: adult income classifier</h1>'
        f'<div class="meta">{meta}</div>'
        f'<div class="badges">{_acceptance_badge(metrics)}{BADGES_SLOT}</div></div></header>'
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


def headline_table(fairness: dict[str, Any]) -> str:
    """The one headline number per attribute and gap (evaluate.headline_gaps), with its interval
    and its rule: the same numbers training prints and the README and mitigation table quote."""
    gaps, intervals = fairness["headline_gaps"], fairness.get("headline_gaps_ci95", {})

    def cell(key: str) -> str:
        low, high = intervals.get(key, [None, None])
        shown = f" <small>[{fmt(low)}, {fmt(high)}]</small>" if low is not None else ""
        return _gap(gaps[key]) + shown

    rows = [
        [
            esc(attribute),
            esc(fairness["by_attribute"][attribute]["reference_group"]),
            cell(f"{attribute}_dp"),
            cell(f"{attribute}_eo"),
        ]
        for attribute in FAIRNESS_ATTRIBUTES
    ]
    rule = fairness.get("headline_rule", "the widest gap against the largest group")
    interval = fairness.get("headline_interval", "")
    return (
        table(["attribute", "against", "selection-rate gap (DP)", "TPR gap (EO)"], rows)
        + f"<p><small>Each gap is {esc(rule)}. Interval: {esc(interval)}.</small></p>"
    )


def _summary_section(metrics: dict[str, Any]) -> str:
    """What a reader needs first: the verdict, quality against the baseline, the fairness gaps."""
    acceptance, baseline = metrics["acceptance"], metrics["baseline"]
    comparison = baseline.get("comparison") or {}
    kpis = "".join(
        [
            _kpi(fmt(metrics["roc_auc"]), f"ROC-AUC (bar {acceptance['min_roc_auc']})"),
            _kpi(fmt(metrics["pr_auc"]), "PR-AUC"),
            _kpi(fmt(metrics["accuracy"]), f"accuracy at {metrics['decision_threshold']}"),
            _kpi(fmt(baseline["roc_auc"]), "logistic baseline ROC-AUC"),
            _kpi(esc(comparison.get("verdict", "n/a")), "against the baseline"),
        ]
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<div class="kpis">{kpis}</div>'
        f"<h3>Fairness: the headline gaps</h3>{headline_table(metrics['fairness'])}</section>"
    )


def _acceptance_badge(metrics: dict[str, Any]) -> str:
    acceptance = metrics["acceptance"]
    verdict = "passed" if acceptance["passed"] else "FAILED"
    text = (
        f"acceptance {verdict}: ROC-AUC {metrics['roc_auc']:.3f} vs bar {acceptance['min_roc_auc']}"
    )
    return badge("ok" if acceptance["passed"] else "bad", text)


def _details_section(metrics: dict[str, Any]) -> str:
    params = table(
        ["hyper-parameter", "value"],
        [
            [esc(k), fmt(v, 4) if isinstance(v, float) else esc(v)]
            for k, v in metrics["hyperparameters"].items()
        ],
    )
    history = metrics["hpo"]["history"]
    search = f"<figure>{hpo_figure(history)}</figure>" if history else "<p>No search.</p>"
    rows = [
        [
            name,
            fmt(m["roc_auc"]),
            fmt(m["pr_auc"]),
            fmt(m["accuracy"]),
            fmt(m["log_loss"]),
            fmt(m["brier"]),
        ]
        for name, m in (("LightGBM (served)", metrics), ("logistic baseline", metrics["baseline"]))
    ]
    kpis = "".join(
        [
            _kpi(f"{metrics['n_train']:,} / {metrics['n_val']:,}", "train / validation rows"),
            _kpi(f"{metrics['hpo']['trials']}", "search trials"),
        ]
    )
    hpo = metrics["hpo"]
    versions = metrics["versions"]
    return (
        f'<section id="details"><h2>Model details</h2><div class="kpis">{kpis}</div>'
        f"<p>LightGBM gradient-boosted trees on {len(metrics['model_inputs'])} inputs "
        f"({esc(', '.join(metrics['model_inputs']))}), chosen by a {hpo['trials']}-trial "
        f"randomized search scored by {hpo['cv_folds']}-fold cross-validation inside the training "
        "part; the validation split was used once, for the numbers below. "
        f"Seed {metrics['seed']}; data sha256 <code>{esc(metrics['data']['sha256'][:16])}…</code>; "
        f"scikit-learn {esc(versions['scikit-learn'])}, LightGBM {esc(versions['lightgbm'])}.</p>"
        f'<div class="grid"><div>{params}</div>{search}</div>'
        "<h3>Against the baseline</h3>"
        + table(["model", "ROC-AUC", "PR-AUC", "accuracy", "log loss", "Brier"], rows)
        + _baseline_verdict(metrics["baseline"].get("comparison"))
        + "</section>"
    )


def _baseline_verdict(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return ""
    low, high = comparison["ci95"]
    klass = "bad" if comparison["verdict"] == "baseline better" else ""
    return (
        f"<p>ROC-AUC difference, model minus baseline: {comparison['roc_auc_difference']:+.4f} "
        f"(paired bootstrap 95% interval {low:+.4f} to {high:+.4f}): "
        f'<b class="{klass}">{esc(comparison["verdict"])}</b>.</p>'
    )


def _quality_section(metrics: dict[str, Any], predictions: pd.DataFrame) -> str:
    y = predictions["y_true"].to_numpy()
    model = predictions["probability"].to_numpy()
    baseline = predictions["baseline_probability"].to_numpy()
    threshold = metrics["decision_threshold"]
    acceptance = metrics["acceptance"]
    tn, fp, fn, tp = confusion_matrix(y, (model >= threshold).astype(int), labels=[0, 1]).ravel()
    confusion = table(
        ["", "predicted <= 50K", "predicted > 50K"],
        [["actual <= 50K", f"{tn:,}", f"{fp:,}"], ["actual > 50K", f"{fn:,}", f"{tp:,}"]],
    )
    verdict = "passed" if acceptance["passed"] else "failed"
    kpis = "".join(
        [
            _kpi(fmt(metrics["roc_auc"]), "ROC-AUC"),
            _kpi(fmt(metrics["pr_auc"]), "PR-AUC"),
            _kpi(fmt(metrics["accuracy"]), f"accuracy at {threshold}"),
            _kpi(fmt(metrics["brier"]), "Brier score"),
            _kpi(verdict, f"acceptance: ROC-AUC >= {acceptance['min_roc_auc']}"),
        ]
    )
    figures = [
        roc_figure(y, model, baseline, metrics),
        pr_figure(y, model, baseline, metrics),
        calibration_figure(y, model),
        score_figure(y, model, threshold),
    ]
    grid = "".join(f"<figure>{f}</figure>" for f in figures)
    return (
        f'<section id="quality"><h2>Quality on validation</h2><div class="kpis">{kpis}</div>'
        f'<div class="grid">{grid}</div>'
        f"<h3>Confusion matrix at threshold {threshold}</h3>{confusion}</section>"
    )


def _mitigation_notes(metrics: dict[str, Any]) -> str:
    """Which mitigation this model was trained with (sets before them: none), and the notes."""
    applied = metrics.get("mitigation", {"description": "none (the plain model)"})
    notes = [
        f"This model's mitigation: {applied['description']}.",
        *(metrics["fairness"]["mitigations"] or [f"No gap exceeds {GAP_LIMIT:.2f}."]),
    ]
    return "".join(f"<li>{esc(m)}</li>" for m in notes)


def _fairness_section(metrics: dict[str, Any]) -> str:
    fairness = metrics["fairness"]
    parts = []
    for attribute in FAIRNESS_ATTRIBUTES:
        report = fairness["by_attribute"][attribute]
        rows = [
            [
                esc(name) + (" <em>(small)</em>" if g["small_group"] else ""),
                f"{g['n']:,}",
                f"{g['positives']:,}",
                fmt(g["roc_auc"]),
                fmt(g["tpr"]),
                fmt(g["fpr"]),
                fmt(g["selection_rate"]),
                _gap(g["demographic_parity_diff"]),
                _gap(g["equal_opportunity_diff"]),
            ]
            for name, g in report["groups"].items()
        ]
        headers = [
            "group",
            "n",
            "positives",
            "ROC-AUC",
            "TPR",
            "FPR",
            "selection rate",
            "DP diff",
            "EO diff",
        ]
        parts.append(
            f"<h3>{esc(attribute)} (reference group: {esc(report['reference_group'])})</h3>"
            f"<figure>{fairness_figure(attribute, report)}</figure>" + table(headers, rows)
        )
    proxy_rows = [
        [
            f"{esc(a)} (vs {esc(p['majority_group'])})",
            fmt(p["roc_auc"]),
            esc(p["strongest_input"] or "n/a"),
        ]
        for a, p in fairness["proxy_check"].items()
    ]
    mitigations = _mitigation_notes(metrics)
    return (
        '<section id="fairness"><h2>Fairness</h2>'
        "<p>Sensitive attributes (race, sex, native country, marital status) are never model "
        f"inputs; they are kept only to measure. Rates at threshold {fairness['threshold']}; gaps "
        f"are absolute differences against the largest group; a gap above {GAP_LIMIT:.2f} is "
        "marked. Groups under 50 rows or with fewer than 10 of either class are flagged as small: "
        "their rates are too noisy to act on alone.</p>"
        + "".join(parts)
        + "<h3>Proxy check: can the inputs reconstruct the sensitive attributes?</h3>"
        + table(
            ["attribute", "ROC-AUC, predicted from the model's inputs", "strongest input"],
            proxy_rows,
        )
        + f"<h3>Mitigation</h3><ul>{mitigations}</ul></section>"
    )


def _importance_section(importances: pd.DataFrame) -> str:
    rows = [
        [esc(r.feature), f"{r.gain:,.0f}", fmt(r.mean_abs_shap)] for r in importances.itertuples()
    ]
    return (
        '<section id="importance"><h2>What the model looks at</h2>'
        f"<figure>{importance_figure(importances)}</figure>"
        + table(["input", "gain", "mean |SHAP|"], rows)
        + "</section>"
    )


def _limits_section(metrics: dict[str, Any]) -> str:
    sex_proxy = metrics["fairness"]["proxy_check"].get("sex", {})
    calibrated = "well" if metrics["brier"] < 0.1 else "only roughly"
    items = [
        "Intended use: estimating, for census-style records, the probability that yearly "
        "income exceeds $50K, for analysis and ranking. Not for decisions about individual "
        "people's access to credit, jobs, housing or benefits.",
        f"Data: {metrics['data']['rows']:,} rows of the 1994 US census extract (UCI Adult). "
        "Incomes and the population have changed since; the model describes that population.",
        "Sensitive attributes are excluded as inputs, but the inputs still carry them: they "
        f"predict sex with a ROC-AUC of {fmt(sex_proxy.get('roc_auc'))}, mostly through "
        f"{sex_proxy.get('strongest_input') or 'n/a'}. Exclusion is not fairness; the gaps above "
        "are what the model does.",
        f"Probabilities are {calibrated} calibrated on validation (Brier {fmt(metrics['brier'])}); "
        "the 0.5 threshold is a convention, not a policy choice.",
        "Small groups (flagged) have wide intervals: do not read their gaps as settled.",
    ]
    body = "".join(f"<li>{esc(item)}</li>" for item in items)
    return f'<section id="use"><h2>Intended use and limits</h2><ul>{body}</ul></section>'


def _gap(value: float | None) -> str:
    text = fmt(value)
    return (
        f'<span class="bad"><b>{text}</b></span>'
        if value is not None and value > GAP_LIMIT
        else text
    )


def build_report(
    artifacts: Path,
    *,
    drift_path: Path | None = None,
    plan_path: Path | None = None,
    live: Path | None = None,
) -> str:
    """The whole page for the set in `artifacts`, its live parts from the given files."""
    manifest = read_manifest(artifacts)
    try:
        metrics = json.loads(read_verified(artifacts, METRICS_FILE, manifest))
        predictions = pd.read_csv(artifacts / PREDICTIONS_FILE)
        importances = pd.read_csv(artifacts / IMPORTANCES_FILE)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{artifacts}: incomplete artifact set ({exc})") from None
    results = []
    if live is not None and (live / "agent_plan.yaml").is_file():
        plan, drift = live / "agent_plan.yaml", live / "drift_report.json"
        results.append(read_monitoring(f"live loop ({live})", plan, drift))
    if drift_path or plan_path:
        label = "the plan and drift report named on the command line"
        results.append(read_monitoring(label, plan_path, drift_path))
    compared = artifacts / MITIGATION_JSON  # python -m src.mitigation_table, when it ran
    mitigations = json.loads(compared.read_text()) if compared.is_file() else None
    version = model_version(manifest)
    return fill(
        build_card(metrics, predictions, importances, mitigations),
        served=served_block(manifest, version, metrics),
        badges=monitoring_badges(results),
        monitoring=monitoring_section(results),
        registry=_registry_part(version),
    )


def _registry_part(version: str) -> str:
    """The registry section, as /report shows it, when this set is in the registry beside the
    log (PREDICTION_LOG_DIR / DATABASE_URL); nothing otherwise."""
    from src.registry.core import CHAMPION, opened_registry
    from src.settings import Settings

    try:
        with opened_registry(Settings()) as registry:
            registry.get(version)
            return registry_section(registry.alias(CHAMPION), version, registry.history(limit=20))
    except Exception:  # no registry here, or not this set in it: the card goes without
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        try:
            page = build_report(
                args.artifacts, drift_path=args.drift, plan_path=args.plan, live=args.live
            )
        except (KeyError, yaml.YAMLError, json.JSONDecodeError) as exc:
            raise DataError(f"{args.artifacts}: a report input is malformed ({exc})") from None
        out = args.out or args.artifacts / "report.html"
        write_text_atomic(out, page)
        print(f"wrote {out} ({len(page) // 1024} KiB)")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
