"""The comparison of fairness mitigations (python -m src.mitigation_table), as the card's section
and as Markdown."""

from __future__ import annotations

from typing import Any

from src.choices import GAP_LIMIT, HEADLINE_INTERVAL, HEADLINE_RULE
from src.report.pages import esc, fmt, table

MITIGATION_JSON = "mitigation.json"  # written beside the set by python -m src.mitigation_table
MITIGATION_MD = "mitigation.md"


def _keys(result: dict[str, Any]) -> list[str]:
    """ROC-AUC, accuracy, then each fairness attribute's two gaps."""
    first = result["rows"][0]["metrics"]
    return ["roc_auc", "accuracy", *(k for k in first if k.endswith(("_dp", "_eo")))]


def _header(key: str) -> str:
    if key.endswith("_dp"):
        return f"{key[:-3]} DP"
    if key.endswith("_eo"):
        return f"{key[:-3]} EO"
    return {"roc_auc": "ROC-AUC"}.get(key, key)


def attribute_of(result: dict[str, Any]) -> str:
    """The constrained attribute: the one the recommendation and the figure are about."""
    return result.get("attribute") or _keys(result)[2][:-3]


def mitigation_section(result: dict[str, Any]) -> str:
    """The comparison of mitigations, when it was run: the card's section."""
    from src.report.figures import mitigation_figure

    keys = _keys(result)
    attribute = attribute_of(result)

    def cell(row: dict[str, Any], key: str) -> str:
        low, high = row["ci95"][key]
        value = row["metrics"][key]
        shown = fmt(value)
        if key.endswith(("_dp", "_eo")) and value is not None and value > GAP_LIMIT:
            shown = f'<span class="bad"><b>{shown}</b></span>'
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
    table_html = table(["candidate", *map(_header, keys), "fit"], rows)
    return (
        '<section id="mitigations"><h2>Fairness mitigations, measured</h2>'
        f"<p>{result['val_rows']} validation rows, the model's split and seed; 95% intervals "
        f"(gaps: {esc(HEADLINE_INTERVAL)}). Each gap is {esc(HEADLINE_RULE)}; DP is the selection "
        f"rate, EO the true-positive rate. Per-group thresholds decide with {esc(attribute)} "
        "(disparate treatment, restricted in credit and hiring): evaluation only, never served. "
        "Measured after training (<code>make fairness</code>), so not part of the set's "
        "manifest.</p>"
        f"{table_html}{mitigation_figure(result['rows'], attribute)}"
        f"<p><b>Choice: {esc(choice['candidate'])}.</b> {esc(choice['why'])}</p></section>"
    )


def _cell(values: dict[str, Any], key: str) -> str:
    low, high = values["ci95"][key]
    return f"{values['metrics'][key]:.3f} [{low:.3f}, {high:.3f}]"


def table_markdown(result: dict[str, Any]) -> str:
    keys = _keys(result)
    lines = [
        "# Fairness mitigations, measured",
        "",
        f"{result['val_rows']} validation rows, seed {result['seed']}, threshold "
        f"{result['decision_threshold']}; 95% intervals in brackets (ROC-AUC, accuracy: "
        f"percentile bootstrap; gaps: {HEADLINE_INTERVAL}). Each gap (dp: selection rate, eo: "
        f"true-positive rate) is {HEADLINE_RULE}.",
        "",
        "| candidate | " + " | ".join(keys) + " | fit s | x plain |",
        "|---|" + "---:|" * (len(keys) + 2),
    ]
    for row in result["rows"]:
        slow = " (over 10x)" if row["too_slow"] else ""
        name = row["candidate"] + ("" if row["trainable"] else " (evaluation only)")
        cells = " | ".join(_cell(row, k) for k in keys)
        lines.append(
            f"| {name} | {cells} | {row['train_seconds']:.2f} | {row['slowdown']:.1f}{slow} |"
        )
    choice = result["recommendation"]
    lines += ["", f"**Choice: {choice['candidate']}.** {choice['why']}", ""]
    return "\n".join(lines)
