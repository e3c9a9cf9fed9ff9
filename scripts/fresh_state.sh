#!/usr/bin/env bash
# A fresh state folder for `make demo` (the prediction log, the registry, the live outputs), at the
# default place, so that every command after the demo (make serve, python -m src.registry, the
# README's commands) works on what the demo made. A folder an earlier demo made is replaced; any
# other one (a registry of your own) is never deleted: it is moved aside, and said.
set -euo pipefail
state=${1:?usage: fresh_state.sh FOLDER}
marker="$state/.made-by-make-demo"
if [ -e "$marker" ]; then
  rm -rf "$state"
elif [ -d "$state" ] && [ -n "$(ls -A "$state")" ]; then
  kept="$state.saved-$(date -u +%Y%m%dT%H%M%SZ)"
  mv "$state" "$kept"
  echo "make demo: $state/ held a state it did not make; moved to $kept/ (nothing deleted)"
fi
mkdir -p "$state"
touch "$marker"
