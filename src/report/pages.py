"""HTML for the model card's live parts: what is served and what the monitoring says, each with
where it came from. Plain HTML and inline CSS (no matplotlib), so the service can render it per
request: the card itself is built at training time (src/report.py) and stored in the artifact set.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

SERVED_SLOT = "<!--served-->"
REGISTRY_SLOT = "<!--registry-->"
BADGES_SLOT = "<!--badges-->"
MONITORING_SLOT = "<!--monitoring-->"
MITIGATION_SLOT = "<!--mitigation-->"
# The mitigation table is measured after training (`make fairness`), so it is not in the set's
# manifest: it is rendered once, kept beside the set, and put in the card when it is there.
MITIGATION_HTML = "mitigation.html"
STATUS_CLASS = {"healthy": "ok", "warn": "warn", "critical": "bad"}
_NUMBER = re.compile(r"^(<[^>]+>)*[-+]?[\d,]*\.?\d+%?(<[^>]+>)*$")


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


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


def badge(klass: str, text: str) -> str:
    return f'<span class="badge {klass}">{esc(text)}</span>'


def plain(value: Any) -> str:
    """A finding's value as a person would write it: [{'x': 0.9}] -> 'x 0.9', True -> 'yes'."""
    if isinstance(value, list):
        return "; ".join(plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v)}" for k, v in value.items())
    return fmt(value) if isinstance(value, bool | None) else str(value)


@dataclass(frozen=True)
class Monitoring:
    """One monitoring result to show: a plan (with its `sources`), the drift report it judged, and
    a label saying what it is (the live loop, or the configured files)."""

    label: str
    plan: dict[str, Any] | None
    drift: dict[str, Any] | None
    drift_source: str | None


def described(path: Path) -> str:
    """A file named with the time it was last written: provenance a reader can check."""
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return f"{path} (written {modified})"


def read_monitoring(label: str, plan_path: Path | None, drift_path: Path | None) -> Monitoring:
    """A plan and a drift report from files; a file that is absent is shown as absent."""
    plan = yaml.safe_load(plan_path.read_text()) if plan_path and plan_path.is_file() else None
    drift = json.loads(drift_path.read_text()) if drift_path and drift_path.is_file() else None
    return Monitoring(label, plan, drift, described(drift_path) if drift else None)


def served_block(
    manifest: dict[str, Any], version: str, metrics: dict[str, Any] | None = None
) -> str:
    """Provenance, last on the page: the model's version, when and from what it was trained,
    and every file's hash (the same as /metadata)."""
    files = table(
        ["file", "sha256"],
        [[esc(name), f"<code>{esc(digest)}</code>"] for name, digest in manifest["files"].items()],
    )
    took = ""
    if metrics and metrics.get("train_seconds") is not None:
        took = f" in {metrics['train_seconds']:.0f} s"
    return (
        '<section id="served"><h2>Provenance: the model this page describes</h2>'
        f"<p>Version <code>{esc(version)}</code>, trained {esc(manifest['created_at'])}{took}, "
        f"git <code>{esc(manifest.get('git_sha') or 'unknown')}</code>, data sha256 "
        f"<code>{esc(manifest['data_sha256'])}</code>. The files of this artifact set, each "
        "checked against these hashes before the model was loaded:</p>"
        f"{files}</section>"
    )


def monitoring_badges(results: Sequence[Monitoring]) -> str:
    out = []
    for result in results:
        if result.plan:
            status = result.plan["status"]
            short = result.label.split(" (")[0]  # the section says the rest
            out.append(badge(STATUS_CLASS.get(status, "warn"), f"{short}: {status}"))
    return "".join(out)


def monitoring_section(results: Sequence[Monitoring]) -> str:
    parts = ['<section id="monitoring"><h2>Drift and monitoring</h2>']
    if not results:
        parts.append(
            "<p>No monitoring result for this service yet: the live loop has not run "
            "(<code>make loop</code>) and no monitoring files are configured.</p>"
        )
    for result in results:
        parts.append(f"<h3>{esc(result.label)}</h3>")
        parts.append(_plan_part(result.plan))
        parts.append(_drift_part(result.drift, result.drift_source))
    parts.append("</section>")
    return "".join(parts)


def _sources_list(sources: dict[str, Any]) -> str:
    items = []
    for name, source in sources.items():
        detail = ", ".join(f"{k} {plain(v)}" for k, v in source.items())
        items.append(f"<li>{esc(name)}: {esc(detail)}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else "<p>Sources not recorded.</p>"


def _plan_part(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "<p>No plan.</p>"
    klass = STATUS_CLASS.get(plan["status"], "warn")
    findings = "".join(
        "<li>" + esc(", ".join(f"{k}: {plain(v)}" for k, v in f.items())) + "</li>"
        for f in plan["findings"]
    )
    notes = plan.get("action_notes") or {}
    actions = ", ".join(f"{a} ({notes[a]})" if a in notes else a for a in plan["actions"])
    return (
        f'<p>Agent verdict: <b class="{klass}">{esc(plan["status"])}</b>, generated '
        f"{esc(plan.get('generated_at', 'n/a'))}. {esc(plan['rationale'])}</p>"
        f"<p>Actions, in order: {esc(actions)}; page on-call: {fmt(plan['page_oncall'])}.</p>"
        f"<p>Judged on:</p>{_sources_list(plan.get('sources') or {})}"
        f"<details><summary>Findings</summary><ul>{findings}</ul></details>"
    )


def _drift_part(drift: dict[str, Any] | None, source: str | None) -> str:
    if not drift:
        return "<p>No drift report.</p>"
    details = drift.get("details", {})
    biggest = max([d["psi"] or 0 for d in details.values()] + [drift["threshold"]])
    rows = []
    for name, d in sorted(details.items(), key=lambda item: -(item[1]["psi"] or 0)):
        width = 100 * (d["psi"] or 0) / biggest
        klass = "bar bad" if d["drifted"] else "bar"
        bar = f'<span class="track"><span class="{klass}" style="width:{width:.0f}%"></span></span>'
        verdict = d.get("verdict") or ("drifted" if d["drifted"] else "ok")
        rows.append(
            [
                esc(name),
                esc(d["role"].replace("_", " ")),
                fmt(d["psi"]),
                fmt(d.get("psi_noise_p95")),
                f'<span class="bad"><b>{esc(verdict)}</b></span>' if d["drifted"] else esc(verdict),
                bar,
            ]
        )
    computed = f", computed {drift['timestamp']}," if drift.get("timestamp") else ""
    inputs_drifted = fmt(drift.get("model_input_drift", drift["overall_drift"]))
    return (
        f"<p>Drift report from {esc(source or 'n/a')}{esc(computed)} over "
        f"{esc(_drift_scope(drift))}: threshold {drift['threshold']}, drift of model inputs "
        f"<b>{inputs_drifted}</b>. The noise level is the PSI sampling alone gives at these sizes "
        "(95th percentile).</p>"
        + table(["feature", "role", "PSI", "noise level", "verdict", ""], rows)
    )


def _drift_scope(drift: dict[str, Any]) -> str:
    window = drift.get("window")
    if window:
        return f"the last {window['hours']} h of the log ({window['rows']:,} rows)"
    sizes = next(iter(drift.get("details", {}).values()), {})
    if "n_new" in sizes:
        return f"{sizes['n_new']:,} new vs {sizes['n_ref']:,} reference rows"
    return "rows not recorded"


def registry_section(champion: str | None, served: str, events: Sequence[dict[str, Any]]) -> str:
    """The registry: who is champion, and what happened, newest first."""
    rows = [
        [
            esc(e["ts"]),
            esc(e["kind"]),
            f"<code>{esc(e['version'] or '-')}</code>",
            esc(e["actor"]),
            esc(str(e["reason"])[:300]),
        ]
        for e in reversed(events)
    ]
    note = ""
    if champion not in (None, served):
        note = (
            f" This worker still serves <code>{esc(served)}</code>: it follows the champion "
            "within seconds, or keeps its model if the new one fails verification."
        )
    return (
        '<section id="registry"><h2>The model registry</h2>'
        f"<p>Champion: <code>{esc(champion or 'none')}</code>.{note}</p>"
        + table(["when", "what", "version", "by", "why"], rows)
        + "</section>"
    )


def fill(
    page: str,
    *,
    served: str = "",
    badges: str = "",
    monitoring: str = "",
    registry: str = "",
    mitigation: str = "",
) -> str:
    """The card with its live parts put in."""
    if REGISTRY_SLOT not in page:  # a card built before the registry had its own place
        monitoring += registry
    return (
        page.replace(SERVED_SLOT, served, 1)
        .replace(BADGES_SLOT, badges, 1)
        .replace(MONITORING_SLOT, monitoring, 1)
        .replace(REGISTRY_SLOT, registry, 1)
        .replace(MITIGATION_SLOT, mitigation, 1)
    )


def attached_mitigation(folder: Path) -> str:
    """The mitigation table kept beside a set (src.mitigation_table writes it), or nothing."""
    path = folder / MITIGATION_HTML
    return path.read_text(encoding="utf-8") if path.is_file() else ""
