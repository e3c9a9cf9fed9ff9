# Every target brings .venv up to date from the pinned requirement files first, so on a fresh
# machine `make demo` and `make test` are all a newcomer needs.
MAKEFLAGS += --no-print-directory
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PY := $(BIN)/python
# A table of your own: make demo DATA=table.csv SPEC=spec.yaml (infer drafts the spec; the set
# goes to artifacts/<the spec file's name>/). Without them: the Adult census.
DATA ?=
SPEC ?=
ifeq ($(SPEC),)
TRAIN_DATA := data/adult_synth.csv
ARTIFACTS ?= artifacts
else
TRAIN_DATA := $(DATA)
ARTIFACTS ?= artifacts/$(basename $(notdir $(SPEC)))
SPEC_ARGS := --spec $(SPEC)
endif
# The prediction log and the model registry beside it (the service, training and the tools read it).
PREDICTION_LOG_DIR ?= var
export PREDICTION_LOG_DIR
LIVE ?= $(PREDICTION_LOG_DIR)/live
TRIALS ?= 20
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help setup lock data train serve drift monitor fairness report loop demo test test-demos lint format bench \
	container-smoke reference-run \
	record-demo stack stack-down soak

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@touch $@

setup: $(STAMP)  ## create/update .venv from the pinned requirements

lock: $(STAMP)  ## re-pin requirements*.txt from requirements*.in (needs the package index)
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-find-links --no-emit-index-url -o requirements.txt requirements.in
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-find-links --no-emit-index-url -o requirements-dev.txt requirements-dev.in

data: $(STAMP)  ## rebuild data/ from data/raw (byte-identical every run)
	$(PY) -m src.make_data

train: $(STAMP)  ## train on data/adult_synth.csv (or DATA= SPEC=) into artifacts/
	@if [ -n "$(SPEC)" ] && [ -z "$(DATA)" ]; then echo "SPEC= needs DATA= (the table)" >&2; exit 2; fi
	$(PY) -m src.train --data $(TRAIN_DATA) $(SPEC_ARGS) --outdir $(ARTIFACTS)/ --trials $(TRIALS)

# The set `make demo` serves: trained again only when what it was trained from changed (so two
# demos register one version); `make train` always trains.
# Every source file counts (a change in src/training/ retrains), the spec files with them.
SOURCES := $(shell find src -name '*.py' -o -name '*.yaml' -o -name '*.css')
$(ARTIFACTS)/manifest.json: $(TRAIN_DATA) $(SPEC) requirements.txt $(SOURCES) | $(STAMP)
	$(MAKE) train

# A registry with a champion (make demo made one) is served as it is; without one, train first.
HAS_CHAMPION = $(PY) -m src.registry --json list 2>/dev/null | $(PY) -c 'import json, sys; \
	sys.exit(not any("champion" in (v["alias"] or "") for v in json.load(sys.stdin)))'
serve: $(STAMP)  ## serve the registry's champion on 127.0.0.1:8000 (PORT=...)
	@$(HAS_CHAMPION) || $(MAKE) $(ARTIFACTS)/manifest.json
	$(BIN)/uvicorn src.app:app --host 127.0.0.1 --port $(PORT) --no-access-log

drift: $(STAMP)  ## drift of the shifted sample against the reference -> artifacts/drift_report.json
ifeq ($(SPEC),)
	$(PY) -m src.drift --ref data/adult_ref_sample.csv --new data/adult_shifted_sample.csv --out $(ARTIFACTS)/drift_report.json
else
	$(PY) -m src.dataset shift --data $(DATA) --spec $(SPEC) --out $(ARTIFACTS)/shifted_sample.csv
	$(PY) -m src.drift --ref $(DATA) --new $(ARTIFACTS)/shifted_sample.csv --spec $(SPEC) --out $(ARTIFACTS)/drift_report.json
endif

monitor: $(STAMP)  ## the monitoring agent's plan -> artifacts/agent_plan.yaml
	$(PY) -m src.agent_monitor --metrics data/metrics_history.jsonl --drift data/drift_latest.json --out $(ARTIFACTS)/agent_plan.yaml

fairness: $(STAMP) | $(ARTIFACTS)/manifest.json  ## every fairness mitigation, measured -> artifacts/mitigation.md
	$(PY) -m src.mitigation_table --artifacts $(ARTIFACTS)

export DEMO_STEPS := $(ARTIFACTS)/demo_steps.tsv
# The census's plan comes from its published metrics history (make monitor); a table's, from the
# hours the loop replayed.
PLAN := $(if $(SPEC),$(LIVE),$(ARTIFACTS))/agent_plan.yaml
report: $(STAMP)  ## the model card with the drift report and plan -> artifacts/report.html
	$(PY) -m src.report --artifacts $(ARTIFACTS) --out $(ARTIFACTS)/report.html \
		--drift $(ARTIFACTS)/drift_report.json --plan $(PLAN) --live $(LIVE)

loop: $(STAMP) | $(ARTIFACTS)/manifest.json  ## serve, replay labelled traffic, monitor what was served
	ARTIFACTS=$(ARTIFACTS) MONITOR_LIVE_DIR=$(LIVE) TRAIN_DATA=$(TRAIN_DATA) DATA=$(DATA) SPEC=$(SPEC) \
		scripts/demo_loop.sh

demo: $(STAMP)  ## the main job, end to end (DATA= SPEC= for a table of your own), on a fresh var/
	@scripts/demo_steps.sh start
	scripts/fresh_state.sh $(PREDICTION_LOG_DIR)
	@scripts/demo_steps.sh train $(MAKE) $(ARTIFACTS)/manifest.json
	@scripts/demo_steps.sh register $(PY) -m src.registry register $(ARTIFACTS)
	@scripts/demo_steps.sh drift $(MAKE) drift
	@$(if $(SPEC),,scripts/demo_steps.sh monitor $(MAKE) monitor)
	@scripts/demo_steps.sh loop $(MAKE) loop
	@# The mitigation table is analysis, not what going live waits for: after the loop.
	@scripts/demo_steps.sh fairness $(MAKE) fairness
	@scripts/demo_steps.sh report $(MAKE) report
	@scripts/demo_steps.sh done
	@ARTIFACTS=$(ARTIFACTS) scripts/demo_next.sh

reference-run: demo  ## refresh the committed reference run in docs/reference-run/
	scripts/reference_run.sh

record-demo: $(STAMP)  ## re-record `make demo` -> docs/demo.cast + docs/demo.gif
	scripts/record_demo.sh

stack: $(STAMP) | $(ARTIFACTS)/manifest.json  ## the deployed stack as processes: PostgreSQL, 2 replicas, HAProxy, Prometheus, Alertmanager, the monitoring job
	ARTIFACTS=$(ARTIFACTS) $(PY) -m ops.stack up

stack-down: $(STAMP)  ## stop everything `make stack` started, by process id
	$(PY) -m ops.stack down

SOAK_MINUTES ?= 10
soak: $(STAMP) | $(ARTIFACTS)/manifest.json  ## the stack under traffic and faults for SOAK_MINUTES (10) -> var/soak/report.md
	ARTIFACTS=$(ARTIFACTS) SOAK_MINUTES=$(SOAK_MINUTES) $(PY) -m ops.soak

container-smoke:  ## build the image, train + serve in it, check the endpoints over 127.0.0.1
	scripts/container_smoke.sh

bench: $(STAMP) | $(ARTIFACTS)/manifest.json  ## speed goals, measured -> bench/results/
	$(PY) -m bench.run

test: $(STAMP)  ## the test suite, on every CPU (a file's tests stay in one worker)
	$(PY) -m pytest -q -n auto --dist loadfile -m "not demo"

test-demos: $(STAMP)  ## make demo on three tables the project was not written for (~5 min)
	$(PY) -m pytest -q -m demo

lint: $(STAMP)  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
