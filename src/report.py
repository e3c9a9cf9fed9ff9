"""A model card as one self-contained HTML page: inline SVG plots (matplotlib), inline CSS, no JS.

`python -m src.report --artifacts artifacts/ --out artifacts/report.html`. Reads what training,
the drift check and the agent wrote; every number on the page comes from those files.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from src.artifacts import METRICS_FILE, PREDICTIONS_FILE, read_manifest
from src.errors import ArtifactError, DataError
from src.evaluate import FAIRNESS_ATTRIBUTES, GAP_LIMIT
from src.fileio import run_cli, write_text_atomic

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


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


_NUMBER = re.compile(r"^(<[^>]+>)*[-+]?[\d,]*\.?\d+%?(<[^>]+>)*$")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; cells that hold a number are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if _NUMBER.match(str(cell)) else f"<td>{cell}</td>"
            for cell in row
        )
        + "</tr>"
        for row in rows
    )
    inner = f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
    return f'<div class="scroll"><table>{inner}</table></div>'


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


def drift_figure(report: dict[str, Any]) -> str:
    details = report["details"]
    names = sorted(details, key=lambda n: details[n]["psi"] or 0)
    psi = [details[n]["psi"] or 0 for n in names]
    noise = [details[n].get("psi_noise_p95") or 0 for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(names) + 1.2))
    colors = [ALERT_COLOR if details[n]["drifted"] else MODEL_COLOR for n in names]
    ax.barh(names, psi, color=colors, height=0.6, label="PSI")
    ax.scatter(
        noise, names, marker="|", s=120, color="#111", label="noise level (95th pct)", zorder=3
    )
    ax.axvline(
        report["threshold"],
        color=ALERT_COLOR,
        linestyle="--",
        linewidth=1,
        label=f"threshold {report['threshold']}",
    )
    ax.set(xlabel="PSI (new vs reference)", title="Feature drift (red: drifted)")
    ax.legend(frameon=False, loc="lower right")
    return svg(fig)


# --- the page -----------------------------------------------------------------------------------

CSS = (Path(__file__).parent / "report.css").read_text()


def _kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><b>{value}</b><span>{esc(label)}</span></div>'


def _read_optional(path: Path) -> Any:
    if not path.is_file():
        return None
    text = path.read_text()
    return yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)


def build_report(
    artifacts: Path, *, drift_path: Path | None = None, plan_path: Path | None = None
) -> str:
    """The page's HTML from the files in `artifacts` (drift report and plan are optional)."""
    manifest = read_manifest(artifacts)
    try:
        metrics = json.loads((artifacts / METRICS_FILE).read_text())
        predictions = pd.read_csv(artifacts / PREDICTIONS_FILE)
        importances = pd.read_csv(artifacts / "feature_importances.csv")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{artifacts}: incomplete artifact set ({exc})") from None
    drift = _read_optional(drift_path or artifacts / "drift_report.json")
    plan = _read_optional(plan_path or artifacts / "agent_plan.yaml")
    version = f"{(manifest.get('git_sha') or 'nogit')[:12]}-{manifest['data_sha256'][:12]}"
    sections = [
        _details_section(metrics, manifest, version),
        _quality_section(metrics, predictions),
        _fairness_section(metrics),
        _importance_section(importances),
        _monitoring_section(drift, plan),
        _limits_section(metrics),
    ]
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    meta = f"version {esc(version)} · trained {esc(manifest['created_at'])} · page {esc(generated)}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Model card: adult income classifier {esc(version)}</title>"
        f"<style>{CSS}</style></head><body>"
        '<header><div class="inner"><h1>Model card: adult income classifier</h1>'
        f'<div class="meta">{meta}</div>'
        f'<div class="badges">{_badges(metrics, drift, plan)}</div></div></header>'
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


def _badge(klass: str, text: str) -> str:
    return f'<span class="badge {klass}">{esc(text)}</span>'


STATUS_CLASS = {"healthy": "ok", "warn": "warn", "critical": "bad"}


def _badges(metrics: dict[str, Any], drift: Any, plan: Any) -> str:
    acceptance = metrics["acceptance"]
    verdict = "passed" if acceptance["passed"] else "FAILED"
    badges = [
        _badge(
            "ok" if acceptance["passed"] else "bad",
            f"acceptance {verdict}: ROC-AUC {metrics['roc_auc']:.3f} vs bar "
            f"{acceptance['min_roc_auc']}",
        )
    ]
    if plan:
        badges.append(
            _badge(STATUS_CLASS.get(plan["status"], "warn"), f"monitor: {plan['status']}")
        )
    if drift:
        drifted = drift["overall_drift"]
        badges.append(_badge("warn" if drifted else "ok", f"drift: {'yes' if drifted else 'no'}"))
    return "".join(badges)


def _details_section(metrics: dict[str, Any], manifest: dict[str, Any], version: str) -> str:
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
            _kpi(esc(version), "version (git SHA - data hash)"),
            _kpi(esc(manifest["created_at"][:19].replace("T", " ")), "trained (UTC)"),
            _kpi(f"{metrics['n_train']:,} / {metrics['n_val']:,}", "train / validation rows"),
            _kpi(f"{metrics.get('train_seconds') or 0:.0f} s", "training time"),
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
        + "</section>"
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
    notes = fairness["mitigations"] or [f"No gap exceeds {GAP_LIMIT:.2f}."]
    mitigations = "".join(f"<li>{esc(m)}</li>" for m in notes)
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
        + f"<h3>Mitigation to try</h3><ul>{mitigations}</ul></section>"
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


def _plain(value: Any) -> str:
    """A finding's value as a person would write it: [{'age': 0.9}] -> 'age 0.9'."""
    if isinstance(value, list):
        return "; ".join(_plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "n/a" if value is None else str(value)


def _gap(value: float | None) -> str:
    text = fmt(value)
    return (
        f'<span class="bad"><b>{text}</b></span>'
        if value is not None and value > GAP_LIMIT
        else text
    )


def _monitoring_section(drift: dict[str, Any] | None, plan: dict[str, Any] | None) -> str:
    parts = ['<section id="monitoring"><h2>Drift and monitoring</h2>']
    if drift:
        details = drift["details"]
        rows = [
            [
                esc(n),
                esc(d["role"].replace("_", " ")),
                fmt(d["psi"]),
                fmt(d.get("psi_noise_p95")),
                '<span class="bad"><b>drifted</b></span>' if d["drifted"] else "ok",
            ]
            for n, d in sorted(details.items(), key=lambda item: -(item[1]["psi"] or 0))
        ]
        parts.append(
            f"<p>Latest drift report: threshold {drift['threshold']}, overall drift "
            f"<b>{'yes' if drift['overall_drift'] else 'no'}</b>. The noise level is the PSI that "
            "sampling alone gives for these sample sizes (95th percentile).</p>"
            f"<figure>{drift_figure(drift)}</figure>"
            + table(["feature", "role", "PSI", "noise level", "verdict"], rows)
        )
    else:
        parts.append("<p>No drift report yet (<code>python -m src.drift</code> writes one).</p>")
    if plan:
        klass = {"healthy": "ok", "warn": "warn", "critical": "bad"}.get(plan["status"], "warn")
        findings = "".join(
            "<li>" + esc(", ".join(f"{k}: {_plain(v)}" for k, v in f.items())) + "</li>"
            for f in plan["findings"]
        )
        parts.append(
            f'<h3>Monitoring agent: <span class="{klass}">{esc(plan["status"])}</span></h3>'
            f"<p>{esc(plan['rationale'])}</p>"
            f"<p>Actions: {esc(', '.join(plan['actions']))}; page on-call: "
            f"{'yes' if plan['page_oncall'] else 'no'}.</p><h3>Findings</h3><ul>{findings}</ul>"
        )
    else:
        parts.append(
            "<p>No monitoring plan yet (<code>python -m src.agent_monitor</code> writes one).</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--out", type=Path, help="default: <artifacts>/report.html")
    parser.add_argument("--drift", type=Path, help="default: <artifacts>/drift_report.json")
    parser.add_argument("--plan", type=Path, help="default: <artifacts>/agent_plan.yaml")
    args = parser.parse_args(argv)

    def body() -> int:
        try:
            page = build_report(args.artifacts, drift_path=args.drift, plan_path=args.plan)
        except (KeyError, yaml.YAMLError, json.JSONDecodeError) as exc:
            raise DataError(f"{args.artifacts}: a report input is malformed ({exc})") from None
        out = args.out or args.artifacts / "report.html"
        write_text_atomic(out, page)
        print(f"wrote {out} ({len(page) // 1024} KiB)")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
