"""The model card: one self-contained HTML page (inline SVG charts, inline CSS, no JS), in the
words of the dataset spec.

Training renders it into the artifact set (model_card.html, hashed like every file), so it
always describes the model it ships with; the service fills in its live parts (the served model's
identity, the monitoring) when it serves /report. It reads an artifact set and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import confusion_matrix

from src.choices import GAP_LIMIT
from src.dataset.spec import ColumnSpec, DatasetSpec
from src.errors import ArtifactError
from src.model.artifacts import (
    IMPORTANCES_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    read_manifest,
    read_verified,
)
from src.report.figures import (
    calibration_figure,
    fairness_figure,
    hpo_figure,
    importance_figure,
    pr_figure,
    roc_figure,
    score_figure,
)
from src.report.mitigation import MITIGATION_JSON, mitigation_section
from src.report.pages import (
    BADGES_SLOT,
    MITIGATION_SLOT,
    MONITORING_SLOT,
    REGISTRY_SLOT,
    SERVED_SLOT,
    badge,
    esc,
    fmt,
    table,
)

CSS = (Path(__file__).parent / "report.css").read_text()


def _gap(value: float | None) -> str:
    text = fmt(value)
    return (
        f'<span class="bad"><b>{text}</b></span>'
        if value is not None and value > GAP_LIMIT
        else text
    )


def _kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><b>{value}</b><span>{esc(label)}</span></div>'


def build_card(
    spec: DatasetSpec,
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
        _quality_section(spec, metrics, predictions),
        _fairness_section(spec, metrics),
        mitigation_section(mitigations) if mitigations else MITIGATION_SLOT,
        _importance_section(importances),
        _reasons_section(metrics),
        _details_section(metrics),
        _limits_section(spec, metrics),
        spec_section(spec),
        REGISTRY_SLOT,
        SERVED_SLOT,
    ]
    # No time in the card: it is part of the set, whose version is what was trained, not when
    # (the served part and the history say when).
    meta = (
        f"dataset {esc(spec.name)} · git {esc(metrics.get('git_sha') or 'unknown')} · "
        f"seed {metrics['seed']}"
    )
    title = esc(f"Model card: {spec.title_or_name}")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>"
        f"<style>{CSS}</style></head><body>"
        f'<header><div class="inner"><h1>{title}</h1>'
        + (f"<p>{esc(spec.description)}</p>" if spec.description else "")
        + f'<div class="meta">{meta}</div>'
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
        for attribute in fairness["by_attribute"]
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


def _quality_section(spec: DatasetSpec, metrics: dict[str, Any], predictions: pd.DataFrame) -> str:
    y = predictions["y_true"].to_numpy()
    model = predictions["probability"].to_numpy()
    baseline = predictions["baseline_probability"].to_numpy()
    threshold = metrics["decision_threshold"]
    acceptance = metrics["acceptance"]
    tn, fp, fn, tp = confusion_matrix(y, (model >= threshold).astype(int), labels=[0, 1]).ravel()
    negative, positive = spec.label.negative_means, spec.label.positive_means
    confusion = table(
        ["", f"predicted {esc(negative)}", f"predicted {esc(positive)}"],
        [
            [f"actual {esc(negative)}", f"{tn:,}", f"{fp:,}"],
            [f"actual {esc(positive)}", f"{fn:,}", f"{tp:,}"],
        ],
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
        score_figure(y, model, threshold, (negative, positive)),
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


def _fairness_section(spec: DatasetSpec, metrics: dict[str, Any]) -> str:
    fairness = metrics["fairness"]
    parts = []
    for attribute in fairness["by_attribute"]:
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
        f"<p>Sensitive attributes ({esc(', '.join(spec.sensitive))}) are never model "
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


def proxy_sentences(attributions: dict[str, Any]) -> list[str]:
    """Per sensitive attribute and group: the gap in mean score from the largest group, and the
    inputs that carry most of it (their mean contributions' differences add up to the gap)."""
    sentences = []
    for attribute, block in attributions["by_group"].items():
        reference = block["reference_group"]
        base = block["groups"][reference]["mean_score"]
        for group, sources in block["gap_sources"].items():
            gap = block["groups"][group]["mean_score"] - base
            carried = ", ".join(f"{s['column']} ({s['difference']:+.2f})" for s in sources)
            sentences.append(
                f"{attribute} = {group}: mean score {gap:+.2f} log-odds from {reference}; "
                f"carried most by {carried}"
            )
    return sentences


def _reasons_section(metrics: dict[str, Any]) -> str:
    """Why the model decides: each decision's reasons are served (/predict?reasons=K); here,
    where the gaps between groups come from, in exact contributions."""
    attributions = metrics.get("attributions")
    if not attributions:  # a set trained before reasons
        return ""
    rows = []
    for attribute, block in attributions["by_group"].items():
        reference = block["reference_group"]
        base = block["groups"][reference]["mean_score"]
        for group, info in block["groups"].items():
            sources = block["gap_sources"].get(group, [])
            rows.append(
                [
                    esc(attribute),
                    esc(group) + (" (reference)" if group == reference else ""),
                    f"{info['rows']:,}",
                    fmt(info["mean_score"] - base),
                    esc(", ".join(f"{s['column']} {s['difference']:+.2f}" for s in sources)),
                ]
            )
    sentences = "".join(f"<li>{esc(s)}</li>" for s in proxy_sentences(attributions))
    return (
        '<section id="reasons"><h2>Reasons, and where the gaps come from</h2>'
        "<p>Each decision can carry its reasons: <code>POST /predict?reasons=3</code> adds the "
        "three inputs that moved the row's score most, with their exact contributions in "
        "log-odds (LightGBM's TreeSHAP: they and the base value add up to the score). Sensitive "
        "columns are never inputs, so a gap between groups comes from the inputs that stand in "
        "for them; on the validation rows, the difference between a group's and the largest "
        "group's mean contributions, input by input, adds up to the gap in mean score:</p>"
        f"<ul>{sentences}</ul>"
        + table(["attribute", "group", "rows", "score vs reference", "inputs carrying it"], rows)
        + "</section>"
    )


def _limits_section(spec: DatasetSpec, metrics: dict[str, Any]) -> str:
    proxies = metrics["fairness"]["proxy_check"]
    first = next(iter(metrics["fairness"]["by_attribute"]), None)
    proxy = proxies.get(first, {}) if first else {}
    calibrated = "well" if metrics["brier"] < 0.1 else "only roughly"
    items = [
        f"Intended use: {spec.intended_use}"
        if spec.intended_use
        else "Intended use: not stated in the dataset spec (`intended_use`): say it before use.",
        f"Data: {metrics['data']['rows']:,} rows ({spec.description or spec.name}). The model "
        "describes the population those rows come from, at the time they were taken.",
        "Sensitive attributes are excluded as inputs, but the inputs may still carry them: they "
        f"predict {first or 'the first attribute'} with a ROC-AUC of {fmt(proxy.get('roc_auc'))}, "
        f"mostly through {proxy.get('strongest_input') or 'n/a'}. Exclusion is not fairness; "
        "the gaps above are what the model does.",
        f"Probabilities are {calibrated} calibrated on validation (Brier {fmt(metrics['brier'])}); "
        "the 0.5 threshold is a convention, not a policy choice.",
        "Small groups (flagged) have wide intervals: do not read their gaps as settled.",
    ]
    body = "".join(f"<li>{esc(item)}</li>" for item in items)
    return f'<section id="use"><h2>Intended use and limits</h2><ul>{body}</ul></section>'


def _domain(column: ColumnSpec) -> str:
    if column.kind == "numeric" and (column.min is not None or column.max is not None):
        return f"[{fmt(column.min)}, {fmt(column.max)}]"
    if column.categories:
        shown = ", ".join(map(str, column.categories[:12]))
        more = f" … ({len(column.categories)} in all)" if len(column.categories) > 12 else ""
        outside = "; others: 400" if column.unknown == "reject" else "; others: served as missing"
        return shown + more + ("" if column.sensitive else outside)
    if column.groups:
        return "groups cut at " + ", ".join(f"{g:g}" for g in column.groups)
    return column.reason or ""


def _role(spec: DatasetSpec, column: ColumnSpec) -> str:
    if column.is_input:
        return "model input"
    if column.sensitive:
        return "sensitive (measured, never an input)"
    if column.name == spec.row_id:
        return "row id"
    if column.name == spec.event_time:
        return "event time"
    return "not used"


def spec_section(spec: DatasetSpec) -> str:
    """The dataset spec the model was trained from: every column, its kind, role and domain."""
    label = spec.label
    rows = [
        [
            esc(c.name),
            esc(c.kind),
            esc(_role(spec, c)),
            esc(_domain(c)) + (" <small>(null allowed)</small>" if c.nullable else ""),
            esc(c.description),
        ]
        for c in spec.columns
    ]
    return (
        '<section id="spec"><h2>The dataset spec</h2>'
        f"<p><b>{esc(spec.name)}</b>: the label is <code>{esc(label.column)}</code>; "
        f"{esc(label.positive)!s} means {esc(label.positive_means)}, {esc(label.negative)!s} "
        f"means {esc(label.negative_means)}. Missing values are written as "
        f"{esc(', '.join(repr(t) for t in spec.missing))}. Spec sha256 "
        f"<code>{esc(spec.digest[:16])}…</code>.</p>"
        + table(["column", "kind", "role", "domain", "description"], rows)
        + "</section>"
    )


def card_inputs(artifacts: Path) -> tuple[DatasetSpec, dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """What the card is built from, read from a set on disk: the spec, the metrics, every
    validation prediction and the importances."""
    from src.model.artifacts import load_bundle

    manifest = read_manifest(artifacts)
    try:
        metrics = json.loads(read_verified(artifacts, METRICS_FILE, manifest))
        predictions = pd.read_csv(artifacts / PREDICTIONS_FILE)
        importances = pd.read_csv(artifacts / IMPORTANCES_FILE)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{artifacts}: incomplete artifact set ({exc})") from None
    return load_bundle(artifacts).spec, metrics, predictions, importances


def render(files: dict[str, bytes]) -> str:
    """The card from an artifact set's files, in memory (training renders it before writing)."""
    import io

    from src.dataset.spec import parse_spec
    from src.model.artifacts import SPEC_FILE

    spec = parse_spec(files[SPEC_FILE].decode(), SPEC_FILE)
    metrics = json.loads(files[METRICS_FILE])
    predictions = pd.read_csv(io.BytesIO(files[PREDICTIONS_FILE]))
    importances = pd.read_csv(io.BytesIO(files[IMPORTANCES_FILE]))
    return build_card(spec, metrics, predictions, importances)


def mitigations_beside(artifacts: Path) -> dict[str, Any] | None:
    """The comparison of mitigations written beside the set (python -m src.mitigation_table)."""
    compared = artifacts / MITIGATION_JSON
    return json.loads(compared.read_text()) if compared.is_file() else None
