# Everything a user runs. `make demo` trains the sample model and serves it; `make test` runs every check.
# The virtual environment uses Python 3.12, the Lambda runtime's version (found by .ci/find-python312).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
MODEL_STORE_URI ?= model-store
DATA ?= training/data/penguins.csv
HOST ?= 127.0.0.1
PORT ?= 3000
LAMBDA_PORT ?= 3001

.PHONY: help dev demo train serve test lint typecheck unit integration template e2e bench build validate deploy clean

help:
	@echo "make demo         set up, train the sample model into ./$(MODEL_STORE_URI) and serve the API on http://$(HOST):$(PORT)"
	@echo "make test         set up and run every check: ruff, mypy, cfn-lint, then all pytest tiers"
	@echo "make dev          create $(VENV) (Python 3.12) and install requirements.txt"
	@echo "make train        train DATA=$(DATA) into MODEL_STORE_URI=$(MODEL_STORE_URI)"
	@echo "make serve        serve template.yaml's API routes locally, in-process (no Docker)"
	@echo "make unit | integration | template | e2e   one test tier"
	@echo "make bench        sam build, then every benchmark in one table: sizes, init, warm latency, API load, retrain (README: Performance)"
	@echo "make build        sam build (no container; needs Python 3.12)"
	@echo "make deploy       sam build && sam deploy --guided"

$(STAMP): requirements.txt pyproject.toml
	@python312=$$(.ci/find-python312) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then \
		rm -rf $(VENV); echo "creating $(VENV) with $$python312"; "$$python312" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

dev: $(STAMP)

train: $(STAMP)
	MODEL_STORE_URI=$(MODEL_STORE_URI) $(PY) -m training train --data $(DATA)

SAMPLE_REQUEST := {"instances": [{"island": "Biscoe", "bill_length_mm": 48.6, "bill_depth_mm": 16.0, "flipper_length_mm": 230, "body_mass_g": 5800, "sex": "male", "year": 2009}]}

serve: $(STAMP)
	@echo "Serving template.yaml's API on http://$(HOST):$(PORT) from the store $(MODEL_STORE_URI). In another terminal:"
	@echo ""
	@echo '  curl -s -X POST http://$(HOST):$(PORT)/predict -H "Content-Type: application/json" -d '\''$(SAMPLE_REQUEST)'\'''
	@echo ""
	$(PY) -m functions.local_api --host $(HOST) --port $(PORT) --lambda-port $(LAMBDA_PORT) \
		--env MODEL_STORE_URI=$(MODEL_STORE_URI) --env DATA_URI=$(DATA) --env PREDICT_FUNCTION_NAME=

demo: train serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

validate: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/cfn-lint template.yaml -a cfn_lint_serverless.rules

unit: $(STAMP)
	$(PY) -m pytest -m unit

integration: $(STAMP)
	$(PY) -m pytest -m integration

template: $(STAMP)
	$(PY) -m pytest -m template

e2e: $(STAMP)
	$(PY) -m pytest -m e2e

# Not a test: builds the bundles, then prints one table of sizes and timings measured side by side, with their
# ratios and targets (benchmarks/__main__.py says what and why). ~5 minutes; QUICK=1 for a smoke run.
bench: build
	$(PY) -m benchmarks $(if $(QUICK),--quick)

# Every check and every test tier; CI (.ci/run) runs exactly this.
test: lint typecheck validate
	$(PY) -m pytest

build: $(STAMP)
	PATH="$$(dirname "$$(.ci/find-python312)"):$(abspath $(BIN)):$$PATH" $(BIN)/sam build

deploy: build
	$(BIN)/sam deploy --guided

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
