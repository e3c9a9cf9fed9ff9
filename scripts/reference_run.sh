#!/usr/bin/env bash
# Copy what `make demo` wrote into docs/reference-run/, the run the README quotes. Only this script
# changes tracked files; `make demo` itself writes to ignored paths (artifacts/, var/).
set -euo pipefail
cd "$(dirname "$0")/.."
ARTIFACTS=${ARTIFACTS:-artifacts}
LIVE=${MONITOR_LIVE_DIR:-var/live}
out=docs/reference-run
mkdir -p "$out/live"
for name in metrics.json fairness.md mitigation.md feature_importances.csv drift_report.json agent_plan.yaml \
  report.html; do
  cp "$ARTIFACTS/$name" "$out/$name"
done
for name in metrics_history.jsonl drift_report.json agent_plan.yaml; do
  cp "$LIVE/$name" "$out/live/$name"
done
.venv/bin/python -m src.report.reference_docs  # the docs pages that quote the run
echo "refreshed $out from $ARTIFACTS and $LIVE"
