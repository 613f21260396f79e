# Every habit is a target. `make demo` runs the product end to end; `make test` runs the whole suite.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
BATCH_WORKERS ?= $(shell nproc)
PYTHON ?= python3

export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup models models-sagemaker demo serve test lint synth bench bench-quick bench-batch bench-gpu clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt functions/requirements.txt training/requirements.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed ## create .venv and install Python and npm dependencies

models: $(VENV)/.installed ## train and package every catalog model in local mode (reuses finished packages; FORCE=1 retrains)
	$(PY) -m training.submit --all --profile demo $(if $(FORCE),--force,)

models-sagemaker: $(VENV)/.installed ## full-profile training jobs on SageMaker GPUs (needs SAGEMAKER_ROLE_ARN, MODELS_BUCKET)
	$(PY) -m training.submit --all --profile full --mode sagemaker

demo: models ## train → export → serve → answer real requests and a batch file (ONCE=1 exits after the demo traffic)
	$(PY) -m local demo --no-build $(if $(ONCE),--once,)

serve: models ## serve every model on this machine: HTTP API on :3000, S3/SQS (moto) on :5000
	$(PY) -m local serve --no-build

test: setup ## run the whole test suite
	$(PY) -m pytest

lint: $(VENV)/.installed ## ruff lint + format check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy catalog.py functions local registry monitoring stacks training bench app.py

synth: setup models ## cdk synth into cdk.out/ (deploy gate, cdk-nag) and cfn-lint every template
	npx cdk synth --quiet
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

bench: models ## side-by-side benchmark (~10 min): build/bench/report.{json,md}, latency.png, placement.json
	$(PY) -m bench

bench-quick: $(VENV)/.installed ## the bench's whole code path on tiny packages (~1 min; figures meaningless)
	$(PY) -m bench --quick

bench-batch: models ## opt-in, about 50 min on 2 cores: 1,000,000 sentiment rows and a 1 GB digits file, fanned out locally
	mkdir -p build/bench
	$(PY) -m bench.probes.batch_fanout sentiment build/models/sentiment 1000000 $(BATCH_WORKERS) 1 1048576 \
		| grep --line-buffered '"rows_per_s"' | tee build/bench/batch-at-scale.jsonl
	$(PY) -m bench.probes.batch_fanout digits build/models/digits 5900000 $(BATCH_WORKERS) 1 1048576 \
		| grep --line-buffered '"rows_per_s"' | tee -a build/bench/batch-at-scale.jsonl

bench-gpu: $(VENV)/.installed ## ONNX Runtime CUDA/TensorRT vs PyTorch CUDA (needs a GPU machine)
	$(PY) -m bench.gpu

clean: ## remove build outputs (packages, cdk.out, bench reports)
	rm -rf build cdk.out
