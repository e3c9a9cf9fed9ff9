#!/usr/bin/env bash
# The loop on one machine: serve the trained model, replay a labelled stream with a planted shift
# through the real API (predictions, then labels as feedback), turn what the service recorded into
# hourly metrics and a drift report, and let the agent judge them (CLI and POST /monitor).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
ARTIFACTS=${ARTIFACTS:-artifacts}
LIVE=${MONITOR_LIVE_DIR:-var/live}
rm -rf "$LIVE"
mkdir -p "$LIVE"
db="sqlite:///$LIVE/predictions.db"
port=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

# Labels are truth: /feedback needs the service's token. The demo makes one for this run.
SERVICE_TOKEN=${SERVICE_TOKEN:-$("$BIN/python" -c 'import secrets; print(secrets.token_hex(16))')}
export SERVICE_TOKEN

echo "== serve $ARTIFACTS on $url, 2 workers (prediction log: $db)"
ARTIFACTS_DIR=$ARTIFACTS DATABASE_URL=$db ACCEPT_EVENT_TIME=true \
  "$BIN/uvicorn" src.app:app --host 127.0.0.1 --port "$port" --workers 2 --no-access-log \
  --log-level warning \
  >"$LIVE/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

echo "== replay 8 days of labelled traffic; the last 24 hours shifted"
"$BIN/python" -m src.loop.replay --url "$url"

echo "== what the service recorded -> hourly metrics + drift of the last 24 h"
"$BIN/python" -m src.monitor_window --database-url "$db" --reference "$ARTIFACTS" --out-dir "$LIVE"

echo "== the agent on those files (CLI)"
"$BIN/python" -m src.agent_monitor --metrics "$LIVE/metrics_history.jsonl" \
  --drift "$LIVE/drift_report.json" --out "$LIVE/agent_plan.yaml"

echo "== the same through POST /monitor"
"$BIN/python" - "$url" "$LIVE" <<'PY'
import json, sys, urllib.request
url, live = sys.argv[1], sys.argv[2]
body = {
    "metrics": [json.loads(line) for line in open(f"{live}/metrics_history.jsonl")],
    "drift": json.load(open(f"{live}/drift_report.json")),
}
request = urllib.request.Request(f"{url}/monitor", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
plan = json.load(urllib.request.urlopen(request, timeout=60))
print(f"POST /monitor: status {plan['status']}, actions {', '.join(plan['actions'])}, "
      f"page on-call: {'yes' if plan['page_oncall'] else 'no'}")
PY

kill -TERM "$pid"
wait "$pid" || true
trap - EXIT
echo "== the plan: $LIVE/agent_plan.yaml"
"$BIN/python" - "$LIVE/agent_plan.yaml" <<'PY'
import sys, yaml
plan = yaml.safe_load(open(sys.argv[1]))
print(f"status: {plan['status']} (page on-call: {'yes' if plan['page_oncall'] else 'no'})")
print(f"actions, in order: {', '.join(plan['actions'])}")
print(f"rationale: {plan['rationale']}")
PY
