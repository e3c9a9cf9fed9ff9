#!/usr/bin/env bash
# Build the image, train inside it into a mounted folder, serve from those artifacts, and check
# /health, /ready and /predict over 127.0.0.1; then remove the container and print the image size.
#
# Uses Docker when an engine answers (GitHub Actions); otherwise buildah + podman from
# ../shared/tools/oci-env.sh (this workplace has no Docker engine). The Dockerfile is the same.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-adult-income:smoke}
TRIALS=${TRIALS:-2}
NAME=adult-income-smoke-$$
sha=$(git rev-parse HEAD 2>/dev/null || true)
work=$(mktemp -d)
chmod 0777 "$work"  # the image runs as uid 10001 and writes its artifacts here

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  engine=docker
  build() { docker build --build-arg GIT_SHA="$sha" -f docker/Dockerfile -t "$IMAGE" .; }
else
  # shellcheck disable=SC1091
  source ../shared/tools/oci-env.sh
  engine=podman
  build() {
    buildah bud --isolation chroot --pull=never --build-arg GIT_SHA="$sha" \
      -f docker/Dockerfile -t "$IMAGE" .
  }
fi

cleanup() {
  "$engine" rm -f "$NAME" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "build ($engine)"
started=$(date +%s)
build
echo "built in $(( $(date +%s) - started ))s"

step "train inside the image into a mounted folder"
"$engine" run --rm --network host -v "$work:/artifacts" "$IMAGE" \
  python -m src.train --data data/adult_synth.csv --outdir /artifacts --trials "$TRIALS"
ls -l "$work"

step "serve from those artifacts"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
"$engine" run -d --name "$NAME" --network host -e PORT="$port" -e SERVICE_TOKEN="$token" \
  -v "$work:/artifacts:ro" "$IMAGE" >/dev/null
url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  if curl -fsS "$url/ready" >/dev/null 2>&1; then break; fi
  if [ "$("$engine" inspect -f '{{.State.Running}}' "$NAME")" != "true" ]; then
    "$engine" logs "$NAME"; echo "container exited" >&2; exit 1
  fi
  sleep 0.5
done

step "checks over 127.0.0.1:$port"
curl -fsS "$url/health"; echo
curl -fsS "$url/ready"; echo
python3 - "$work/sample_rows.json" >"$work/two_rows.json" <<'PY'
import json, sys
print(json.dumps(json.load(open(sys.argv[1]))["rows"][:2]))
PY
response=$(curl -fsS -X POST -H 'Content-Type: application/json' --data @"$work/two_rows.json" "$url/predict")
echo "$response"
python3 - "$response" <<'PY'
import json, sys
body = json.loads(sys.argv[1])
assert len(body["predictions"]) == 2, body
for p in body["predictions"]:
    assert 0.0 <= p["probability"] <= 1.0 and p["class"] == int(p["probability"] >= body["threshold"]), p
print("predict: ok")
PY
step "the prediction log: the rows land in it, and /feedback takes their labels"
SERVICE_TOKEN="$token" python3 - "$url" "$response" <<'PY'
import json, os, sys, time, urllib.request
url, answer = sys.argv[1], json.loads(sys.argv[2])
ready = json.load(urllib.request.urlopen(f"{url}/ready", timeout=10))
print("prediction log:", ready["prediction_log"])
assert ready["prediction_log"].get("backend") == "sqlite", ready
labels = [{"prediction_id": p["prediction_id"], "label": 1} for p in answer["predictions"]]
for _ in range(100):  # the writer ships every 50 ms
    request = urllib.request.Request(
        f"{url}/feedback", json.dumps({"labels": labels}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {os.environ['SERVICE_TOKEN']}"},
    )
    outcome = json.load(urllib.request.urlopen(request, timeout=10))
    if outcome["matched"] == len(labels):
        break
    time.sleep(0.1)
print("feedback:", outcome)
assert outcome["matched"] == len(labels) and not outcome["invalid"], outcome
print("log: ok")
PY
user=$("$engine" exec "$NAME" id -u)
[ "$user" != 0 ] || { echo "the container runs as root" >&2; exit 1; }
echo "runs as uid $user"

step "image size"
size=$("$engine" image inspect -f '{{.Size}}' "$IMAGE")
echo "$IMAGE: $(( size / 1024 / 1024 )) MiB"
echo "container smoke: ok"
