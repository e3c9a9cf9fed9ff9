#!/usr/bin/env bash
# make demo's steps, timed. `demo_steps.sh start` begins the record; `demo_steps.sh NAME CMD...`
# says which step runs, runs it and records its seconds; `demo_steps.sh done` prints them all.
set -euo pipefail
record=${DEMO_STEPS:?DEMO_STEPS names the record file}
step=$1
shift
case $step in
  start)
    mkdir -p "$(dirname "$record")"
    date +%s%N >"$record.start"
    : >"$record"
    rm -f "$record.live"
    exit 0
    ;;
  done)
    total=$(( ($(date +%s%N) - $(cat "$record.start")) / 1000000 ))
    echo "== make demo: each step's time"
    while IFS=$'\t' read -r name ms; do
      printf '  %-10s %7d.%01d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100))
    done <"$record"
    printf '  %-10s %7d.%01d s\n' "total" $((total / 1000)) $((total % 1000 / 100))
    if [ -f "$record.live" ]; then
      live=$(( ($(cat "$record.live") - $(cat "$record.start")) / 1000000 ))
      printf '  live (the champion served, the loop running) after %d.%01d s\n' \
        $((live / 1000)) $((live % 1000 / 100))
    fi
    exit 0
    ;;
esac
echo "== make demo: $step"
started=$(date +%s%N)
"$@"
printf '%s\t%d\n' "$step" $(( ($(date +%s%N) - started) / 1000000 )) >>"$record"
