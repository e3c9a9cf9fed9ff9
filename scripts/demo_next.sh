#!/usr/bin/env bash
# What to run after `make demo`: every command below works on what the demo made, as it is.
state=${PREDICTION_LOG_DIR:-var}
cat <<MSG

== make demo is done. Its state is the default one ($state/: the prediction log and the registry),
   so the commands below work on it as they are:
  make serve                                          # its champion on http://127.0.0.1:8000 (/report, /docs)
  .venv/bin/python -m src.registry list               # its versions; history: what the agent did
  .venv/bin/python -m src.monitor_window --reference ${ARTIFACTS:-artifacts}/ --out-dir $state/live/
  .venv/bin/python -m src.agent_monitor --metrics $state/live/metrics_history.jsonl \\
      --drift $state/live/drift_report.json --out $state/live/agent_plan.yaml
  xdg-open ${ARTIFACTS:-artifacts}/report.html                      # the model card with the loop's results
MSG
