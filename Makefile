# Grassroots — `make run` starts the suite, `make test` runs its tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
AMQP_URI ?= amqp://guest:guest@localhost:5672/
RABBIT_CTL_URI ?= http://guest:guest@localhost:15672
export AMQP_URI

.PHONY: install run demo test test-faults test-unit lint migrate asyncapi docs bench bench-all bench-notices bench-volunteer bench-legal clean

# requirements-dev.txt: the runtime pins (requirements.txt, all the container image gets) plus tests and tools.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip 'setuptools<82'
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	PYTHONWARNINGS=ignore $(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .  # the `grassroots` CLI
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m tools.suite run

# Three cross-service scenarios against the suite `make run` started (in another terminal).
demo: install
	$(PY) -m tools.demo $(DEMO_ARGS)

migrate: install
	$(PY) -m tools.migrate

# Lint and type checks, then the whole suite against a real RabbitMQ (management plugin on) and
# PostgreSQL; tests create and drop their own vhosts and databases. tools/test_prereqs finds or
# installs what the tests need beyond the venv (management plugin, promtool, kubectl).
test: install
	$(PY) -m tools.test_prereqs --rabbit-api-uri $(RABBIT_CTL_URI)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest tests --amqp-uri $(AMQP_URI) --rabbit-ctl-uri $(RABBIT_CTL_URI) $(PYTEST_ARGS)

# The fault scenarios (tests/faults, docs/faults.md): the services as OS processes, SIGKILLed, stopped
# and cut off from their broker under load. Each prints one line — sent, effects, lost, duplicated,
# recovery seconds — and fails on any loss or duplicate; all lines are repeated at the end. Not part
# of `make test` (pytest.ini deselects the faults marker); ~15 min, 5 of them a callee down on purpose.
test-faults: install
	$(PY) -m tools.test_prereqs --rabbit-api-uri $(RABBIT_CTL_URI)
	$(PY) -m pytest tests/faults -m faults -s --amqp-uri $(AMQP_URI) --rabbit-ctl-uri $(RABBIT_CTL_URI) $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# ruff (lint and format check), mypy and the import contracts (the layers: docs/architecture.md),
# configured in pyproject.toml.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# docs/asyncapi.yaml from the code (RPC contracts, services/*/events.py); tests fail when it is stale.
asyncapi: install
	$(PY) -m tools.asyncapi

# Every generated document: docs/asyncapi.yaml (the asyncapi target) and docs/rpc.md
# (tools/rpc_reference.py); tests fail when either is stale.
docs: install asyncapi
	$(PY) -m tools.rpc_reference

BENCH_DB ?= postgresql://postgres@127.0.0.1:5432/grassroots_bench
bench: install
	$(PY) -m bench.seed_grid --database-url $(BENCH_DB)
	$(PY) -m bench.grid_rpc --database-url $(BENCH_DB) --amqp-uri $(AMQP_URI)

# Every bench (seeding the district first when needed), then one table of every goal; BENCH_ARGS=--readme
# writes the table into bench/README.md.
bench-all: install
	$(PY) -m bench.all --database-url $(BENCH_DB) --amqp-uri $(AMQP_URI) $(BENCH_ARGS)

bench-notices: install
	$(PY) -m bench.notices_fanout --grid-database-url $(BENCH_DB) --amqp-uri $(AMQP_URI)

bench-volunteer: install
	$(PY) -m bench.volunteer_matching --amqp-uri $(AMQP_URI)

bench-legal: install
	$(PY) -m bench.legal_booking --amqp-uri $(AMQP_URI)

clean:
	rm -rf var
