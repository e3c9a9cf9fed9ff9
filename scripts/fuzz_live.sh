#!/usr/bin/env bash
# Schemathesis against the real uvicorn server (2 workers, prediction log on) over 127.0.0.1: cases
# generated from the service's own OpenAPI schema (fixed seed), every check on (no 5xx, documented
# statuses, schema-conformant bodies), /feedback with the service's token. Settings in
# schemathesis.toml. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
EXAMPLES=${EXAMPLES:-500}
work=$(mktemp -d)
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$BIN/python" -m src.train --data data/adult_synth.csv --outdir "$work/artifacts" --trials 2 >/dev/null 2>&1
port=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$("$BIN/python" -c 'import secrets; print(secrets.token_hex(16))')
ARTIFACTS_DIR="$work/artifacts" LOG_REQUESTS=false PREDICTION_LOG_DIR="$work/log" \
  SERVICE_TOKEN="$token" "$BIN/uvicorn" src.app:app \
  --host 127.0.0.1 --port "$port" --workers 2 --no-access-log --log-level warning &
pid=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  sleep 0.5
done

# Run from the temp folder: the fuzzer's own caches land there, not in the checkout.
root=$PWD
(cd "$work" && "$root/$BIN/schemathesis" --config-file "$root/schemathesis.toml" \
  run "http://127.0.0.1:$port/openapi.json" \
  --include-path-regex '^/(predict|monitor|feedback)$' \
  --header "Authorization: Bearer $token" \
  --max-examples "$EXAMPLES" --seed 42 --workers 1 \
  --generation-database none \
  --report junit --report-dir "$work/report")
python3 - "$work/report" <<'PY'
import pathlib, sys, xml.etree.ElementTree as ET
for path in pathlib.Path(sys.argv[1]).glob("*.xml"):
    root = ET.parse(path).getroot()
    print(f"junit: {root.get('tests') or root[0].get('tests')} operations, failures={root.get('failures') or root[0].get('failures')}")
PY
