# Agent Monitor — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint fmt bench install install-test clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@ $(VENV)/.installed-run

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

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test $(CHROMIUM) $(ALERTMANAGER)

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
	$(BIN)/python -m bench.monitoring

## Remove the embedded stack's data (Postgres, Temporal history, logs). Stop `make run` first.
clean-data:
	rm -rf .agent-monitor
