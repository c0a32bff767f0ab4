# Everything a user runs. `make demo` trains the sample model and serves it; `make test` runs every check.
# The virtual environment uses Python 3.12, the Lambda runtime's version (found by .ci/find-python312).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
MODEL_STORE_URI ?= model-store
# Where `make serve` captures served requests and POST /feedback stores labels (docs/monitoring.md).
CAPTURE_FOLDER ?= capture
DATA ?= training/data/penguins.csv
HOST ?= 127.0.0.1
PORT ?= 3000
LAMBDA_PORT ?= 3001

REPORT ?= report.html
REPORT_PNG ?= report.png
REPORT_MODEL ?= penguins
# Headless Chromium for the report's screenshot (Debian's `chromium` package).
CHROMIUM ?= chromium
CHROMIUM_FLAGS := --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
	--disable-sync --no-first-run --hide-scrollbars --window-size=1100,4400

.PHONY: help dev demo train serve test lint typecheck unit integration template e2e bench build validate security deploy clean report demo-loop

help:
	@echo "make demo         set up, train the sample model into ./$(MODEL_STORE_URI) and serve the API on http://$(HOST):$(PORT)"
	@echo "make test         set up and run every check: ruff, mypy, cfn-lint, then all pytest tiers"
	@echo "make dev          create $(VENV) (Python 3.12) and install requirements.txt"
	@echo "make train        train DATA=$(DATA) into MODEL_STORE_URI=$(MODEL_STORE_URI)"
	@echo "make serve        serve MODEL_NAME (or the store's only model) on template.yaml's API routes, in-process (no Docker)"
	@echo "make unit | integration | template | e2e   one test tier"
	@echo "make demo-loop    the monitoring loop locally: capture, drift, feedback, live metric, report (docs/monitoring.md)"
	@echo "make report       write $(REPORT) (the model report of MODEL_STORE_URI) and $(REPORT_PNG) (its screenshot, headless Chromium)"
	@echo "make bench        sam build, then every benchmark in one table: sizes, init, warm latency, API load, retrain (docs/performance.md)"
	@echo "make security     checkov on template.yaml (own venv .ci/.venv-checkov; every skip has its reason in Metadata)"
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
	@# layers/shared on the path, as in Lambda (/opt/python): a package of yours there (custom transformers for
	@# your pipeline) imports in training, the tests and local serving with no install step.
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "sklambda-shared-layer.pth").write_text(str(pathlib.Path("layers/shared").resolve()) + "\n")'
	@touch $(STAMP)

dev: $(STAMP)

train: $(STAMP)
	MODEL_STORE_URI=$(MODEL_STORE_URI) $(PY) -m training train --data $(DATA)

# The model named by MODEL_NAME (else the only one in the store), with a banner showing a curl for that model; a
# local POST /retrain trains on DATA (when given) or DATA_URI (devtools/serve.py).
serve: $(STAMP)
	$(PY) -m devtools.serve --store $(MODEL_STORE_URI) --host $(HOST) --port $(PORT) --lambda-port $(LAMBDA_PORT) \
		$(if $(filter command line,$(origin DATA)),--data $(DATA))

demo: train serve

# Serve, send shifted traffic and feedback, run the monitor twice, write demo-loop/report.html (no AWS).
demo-loop: $(STAMP)
	$(PY) -m devtools.demo_loop --workdir demo-loop

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

validate: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/cfn-lint template.yaml -a cfn_lint_serverless.rules

# checkov in its own virtual environment (it pins an old packaging): .ci/checkov creates it on first use.
security:
	.ci/checkov

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

# The model report (one self-contained HTML file) of REPORT_MODEL in MODEL_STORE_URI, and a screenshot of it taken
# by headless Chromium. A store without that model gets the sample model first: trained, then retrained once (a
# run record, and a challenger-vs-champion comparison to show). Chromium is installed with apt-get when missing
# (as root; otherwise install it yourself: apt-get install chromium).
report: $(STAMP)
	@if ! $(PY) -c 'import sys; from sklambda.store import ModelStore; sys.exit(not ModelStore.from_uri(sys.argv[1]).versions(sys.argv[2]))' \
		"$(MODEL_STORE_URI)" "$(REPORT_MODEL)"; then \
		set -e; echo "no $(REPORT_MODEL) in $(MODEL_STORE_URI): training the sample model, then retraining it once"; \
		$(PY) -m training train --data $(DATA) --store $(MODEL_STORE_URI); \
		$(PY) -m training retrain --data $(DATA) --store $(MODEL_STORE_URI); \
	fi
	$(PY) -m training report --store $(MODEL_STORE_URI) --name $(REPORT_MODEL) --out $(REPORT)
	@command -v $(CHROMIUM) >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| { echo "headless Chromium is needed for the screenshot: apt-get install chromium (or CHROMIUM=/path/to/it)" >&2; exit 1; }
	$(CHROMIUM) $(CHROMIUM_FLAGS) --screenshot="$(abspath $(REPORT_PNG))" "file://$(abspath $(REPORT))" 2>/dev/null
	@echo "open $(REPORT) in a browser; its screenshot is $(REPORT_PNG)"

# Every check and every test tier; CI (.ci/run) runs exactly this.
test: lint typecheck validate
	$(PY) -m pytest

build: $(STAMP)
	PATH="$$(dirname "$$(.ci/find-python312)"):$(abspath $(BIN)):$$PATH" $(BIN)/sam build

deploy: build
	$(BIN)/sam deploy --guided

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
