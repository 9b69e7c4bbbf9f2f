# infersight: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB ?= ./infersight.duckdb
PYTEST_ARGS ?=

.PHONY: help install system-deps ebpf-setup testenvs demo collector test test-fast bench lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv with infersight and everything it needs (idempotent)

system-deps: ## Install the Debian packages the tests need (root or sudo)
	bash .ci/system-deps.sh

ebpf-setup: install ## Make bcc, kernel headers and tracefs usable by .venv (root or sudo)
	bash .ci/ebpf-setup.sh $(VENV)

testenvs: install ## Build the per-instrumentation virtual environments used by the tests
	$(BIN)/python tests/instrumentation/envs.py

collector: install ## Run the collector in the foreground (DB: $(DEMO_DB))
	$(BIN)/infersight collector --db $(DEMO_DB)

demo: install ## Start the collector, send a demo GenAI workload, show what was stored
	bash deploy/demo.sh $(DEMO_DB)

test: system-deps install ebpf-setup testenvs ## Set up and run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install ## Unit tests only (no instrumentation environments, no slow tests)
	$(BIN)/python -m pytest -m "not slow and not instrumentation and not ebpf" $(PYTEST_ARGS)

bench: install ## Run the benchmarks and print ratios against their baselines
	$(BIN)/python bench/run.py

lint: install ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## Remove virtual environments and caches
	rm -rf $(VENV) .testenvs .mypy_cache .ruff_cache .pytest_cache
