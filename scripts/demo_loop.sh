#!/usr/bin/env bash
# The whole loop on one machine, with no restart: serve the registry's champion (version 1),
# replay labelled traffic with a planted shift through the real API, judge what the service
# recorded (critical), let the agent act (retrain on the labelled traffic, gate, promote), watch
# the service swap to version 2 and the hourly ROC-AUC recover, then roll back and watch it fall.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
LIVE=${MONITOR_LIVE_DIR:-var/live}
export PREDICTION_LOG_DIR=${PREDICTION_LOG_DIR:-var}
mkdir -p "$LIVE"
rm -f "$LIVE"/*.jsonl "$LIVE"/*.json "$LIVE"/*.yaml
port=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
# Labels are truth: /feedback needs the service's token. The demo makes one for this run.
SERVICE_TOKEN=${SERVICE_TOKEN:-$("$BIN/python" -c 'import secrets; print(secrets.token_hex(16))')}
export SERVICE_TOKEN MODEL_POLL_SECONDS=2

champion() { "$BIN/python" -m src.registry --json list | "$BIN/python" -c 'import json,sys; print(next(v["version"] for v in json.load(sys.stdin) if "champion" in (v["alias"] or "")))'; }
served() { curl -fsS "$url/ready" | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["model_version"])'; }
wait_for() { for _ in $(seq 1 120); do [ "$(served)" = "$1" ] && return 0; sleep 0.5; done; echo "the service did not swap to $1" >&2; return 1; }
judge() {  # the log -> hourly points + drift -> the agent's plan
  "$BIN/python" -m src.monitor_window --reference "$REFERENCE" --out-dir "$LIVE" >/dev/null
  "$BIN/python" -m src.agent_monitor --metrics "$LIVE/metrics_history.jsonl" \
    --drift "$LIVE/drift_report.json" --out "$LIVE/agent_plan.yaml" \
    --data "${TRAIN_DATA:-data/adult_synth.csv}" "$@"
}
roc_by_hour() {  # the last hours' ROC-AUC and the version that served them
  "$BIN/python" - "$LIVE/metrics_history.jsonl" "$1" <<'PY'
import json, sys
points = [json.loads(line) for line in open(sys.argv[1]) if '"roc_auc": null' not in line]
for p in points[-int(sys.argv[2]):]:
    print(f"    {p['ts'][5:16]}  ROC-AUC {p['roc_auc']:.3f}  served by {p['model_version']}")
PY
}

echo "== serve the registry's champion on $url, 2 workers (log and registry in $PREDICTION_LOG_DIR)"
DATABASE_URL= ACCEPT_EVENT_TIME=true "$BIN/uvicorn" src.app:app --host 127.0.0.1 --port "$port" \
  --workers 2 --no-access-log --log-level warning >"$LIVE/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do curl -fs "$url/ready" >/dev/null 2>&1 && break; sleep 0.25; done
curl -fs "$url/ready" >/dev/null || { echo "the service did not become ready: $LIVE/server.log" >&2; exit 1; }
# Live: the champion served, the loop about to run. make demo's record keeps the moment.
[ -z "${DEMO_STEPS:-}" ] || date +%s%N >"$DEMO_STEPS.live"
v1=$(champion)
REFERENCE="$PREDICTION_LOG_DIR/registry/$v1"  # drift is judged against version 1's training rows
echo "   version 1: $v1"

echo "== replay 8 days of labelled traffic; the last 24 hours shifted (the population and the label's line)"
START=$("$BIN/python" -c 'from src.loop.replay import default_start; print(default_start().isoformat())')
# A table of your own (DATA and SPEC): its holdout rows and a change planted from its spec.
TABLE=()
[ -z "${SPEC:-}" ] || TABLE=(--data "$DATA" --spec "$SPEC")
"$BIN/python" -m src.loop.replay --url "$url" --start "$START" "${TABLE[@]}"

echo "== judge what the service recorded, and act (--execute)"
judge --execute
roc_by_hour 4
v2=$(champion)
if [ "$v2" = "$v1" ]; then
  # The gate refused the challenger (its reasons are in the history). The census's demo is known
  # to pass the gate: there, a refusal is a failure. On a table of your own it is an outcome.
  echo "== the gate kept version 1; its reasons:"
  "$BIN/python" -m src.registry history | grep -E ' refused ' | tail -1
  [ -n "${SPEC:-}" ] || exit 1
  echo "== 12 more shifted hours, still served by version 1 (nothing to swap to or roll back)"
  "$BIN/python" -m src.loop.replay --url "$url" --start "$START" --first-hour 192 --hours 12 --shift-hours 12 --seed 8 "${TABLE[@]}"
  judge >/dev/null
  roc_by_hour 14
else
  echo "== the service swaps to version 2 ($v2) without a restart"
  wait_for "$v2"
  echo "== 12 more shifted hours, served by version 2"
  "$BIN/python" -m src.loop.replay --url "$url" --start "$START" --first-hour 192 --hours 12 --shift-hours 12 --seed 8 "${TABLE[@]}"
  judge >/dev/null
  roc_by_hour 14

  echo "== roll back to version 1, and 12 more shifted hours"
  "$BIN/python" -m src.registry rollback --reason "demo: back to version 1"
  wait_for "$v1"
  "$BIN/python" -m src.loop.replay --url "$url" --start "$START" --first-hour 204 --hours 12 --shift-hours 12 --seed 9 "${TABLE[@]}"
  judge >/dev/null
  roc_by_hour 12
fi

echo "== the registry's history"
"$BIN/python" -m src.registry history | tail -8
kill -TERM "$pid"
wait "$pid" || true
trap - EXIT
echo "== the last plan: $LIVE/agent_plan.yaml"
