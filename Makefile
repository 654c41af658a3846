# Agent Monitor — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint fmt bench install install-test lock clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Installs come from the lock files (exact versions, sha256 of every file: pip refuses anything else); pyproject.toml
# keeps the ranges. `make lock` recompiles them from pyproject.toml against PyPI.
$(VENV)/.installed-run: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml requirements-test.lock | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements-test.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@ $(VENV)/.installed-run

LOCK := $(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple --no-header --quiet
## Recompile requirements.lock (to run) and requirements-test.lock (to test and lint) from pyproject.toml.
lock: install-test
	$(LOCK) -o requirements.lock
	$(LOCK) --extra test --extra dev -o requirements-test.lock

# Browser tests drive Debian's Chromium through Playwright (never `playwright install`: it downloads).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null

# tests/api/test_alertmanager.py has a real Alertmanager post its webhook to the app.
ALERTMANAGER ?= /usr/bin/prometheus-alertmanager
$(ALERTMANAGER):
	@sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq prometheus-alertmanager >/dev/null

# tests/observability/test_prometheus.py has a real Prometheus scrape the web's and the worker's /metrics.
PROMETHEUS ?= /usr/bin/prometheus
$(PROMETHEUS):
	@sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test $(CHROMIUM) $(ALERTMANAGER) $(PROMETHEUS)

## Start everything offline (Temporal dev server, Postgres, migrations, worker, web) and print the URLs.
run: install
	$(BIN)/agent-monitor up

## Install what the tests need and run the whole suite on real Temporal and Postgres.
test: install-test
	$(BIN)/pytest

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Benchmarks, one after another; each prints its figures and targets (docs/operations.md, "Benchmarks").
bench: install-test
	$(BIN)/python -m bench.engine
	$(BIN)/python -m bench.sse
	$(BIN)/python -m bench.incident_list
	$(BIN)/python -m bench.approvals
	$(BIN)/python -m bench.conversations
	$(BIN)/python -m bench.incident_page
	$(BIN)/python -m bench.monitoring
	$(BIN)/python -m bench.uptime
	$(BIN)/python -m bench.scenarios
	$(BIN)/python -m bench.load --stock
	$(BIN)/python -m bench.faults

## Remove the embedded stack's data (Postgres, Temporal history, logs). Stop `make run` first.
clean-data:
	rm -rf .agent-monitor
