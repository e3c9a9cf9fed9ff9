#!/usr/bin/env bash
# Record `make demo` as a terminal session (docs/demo.cast) and render it (docs/demo.gif).
# Headless: asciinema records the command's own pseudo-terminal; no screen is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export TERM=xterm-256color
"$BIN/asciinema" rec --overwrite --quiet --cols 110 --rows 32 \
  --title "make demo: train, drift, monitor, report, and the served loop" \
  --command "make demo" \
  docs/demo.cast
"$BIN/agg" --speed 2 --idle-time-limit 1.5 --font-size 14 docs/demo.cast docs/demo.gif
ls -l docs/demo.cast docs/demo.gif
