"""fairness.md: the fairness report training writes beside the model, in Markdown."""

from __future__ import annotations

from typing import Any

from src.choices import GAP_LIMIT


def headline_markdown(fairness: dict[str, Any]) -> list[str]:
    """The headline gaps as a Markdown table, with their rule and interval."""
    lines = [
        "## The headline gaps",
        "",
        "| attribute | against | DP gap | 95% interval | EO gap | 95% interval |",
        "|---|---|---:|---|---:|---|",
    ]
    gaps, intervals = fairness["headline_gaps"], fairness["headline_gaps_ci95"]
    for attribute in fairness["by_attribute"]:
        cells = [
            f"{gaps[key]:.3f} | [{intervals[key][0]:.3f}, {intervals[key][1]:.3f}]"
            for key in (f"{attribute}_dp", f"{attribute}_eo")
        ]
        reference = fairness["by_attribute"][attribute]["reference_group"]
        lines.append(f"| {attribute} | {reference} | {' | '.join(cells)} |")
    rule = f"Each gap is {fairness['headline_rule']}. Interval: {fairness['headline_interval']}."
    return [*lines, "", rule, ""]


def fairness_markdown(metrics: dict[str, Any]) -> str:
    """fairness.md: the headline gaps, every group of every attribute, the proxy check."""
    fairness = metrics["fairness"]
    lines = [
        "# Fairness report",
        "",
        f"Validation rows: {metrics['n_val']}. Decision threshold: {fairness['threshold']}. "
        f"Overall ROC-AUC: {fairness['overall_roc_auc']:.4f}.",
        "Sensitive attributes are never model inputs; they are used here only to measure.",
        f"Gaps are absolute differences against the largest group; gaps above {GAP_LIMIT:.2f} "
        "call for mitigation. Small groups (flagged) have rates too noisy to act on alone.",
        "",
        *headline_markdown(fairness),
    ]
    for attribute in fairness["by_attribute"]:
        report = fairness["by_attribute"][attribute]
        lines += [
            f"## {attribute} (reference group: {report['reference_group']})",
            "",
            "| group | n | positives | ROC-AUC | TPR | FPR | selection rate | DP diff | EO diff "
            "| small |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, g in report["groups"].items():
            cells = [
                f"{v:.3f}" if isinstance(v, float) else "n/a"
                for v in (
                    g["roc_auc"],
                    g["tpr"],
                    g["fpr"],
                    g["selection_rate"],
                    g["demographic_parity_diff"],
                    g["equal_opportunity_diff"],
                )
            ]
            flag = "yes" if g["small_group"] else ""
            lines.append(f"| {name} | {g['n']} | {g['positives']} | {' | '.join(cells)} | {flag} |")
        lines.append("")
    lines += [
        "## Proxy check",
        "",
        "| attribute | predicted from inputs, ROC-AUC | strongest input |",
        "|---|---:|---|",
    ]
    for attribute, p in fairness["proxy_check"].items():
        auc = f"{p['roc_auc']:.3f}" if p["roc_auc"] is not None else "n/a"
        lines.append(
            f"| {attribute} (vs {p['majority_group']}) | {auc} | {p['strongest_input'] or 'n/a'} |"
        )
    lines += ["", "## Mitigation", ""]
    lines += [f"- {m}" for m in fairness["mitigations"]] or ["No gap exceeds 0.10."]
    return "\n".join(lines) + "\n"
