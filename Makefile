SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# uv is installed with pip when missing; `python3 -m uv` works whether or not pip's bin folder is on PATH.
PYTHON ?= python3
UV := $(PYTHON) -m uv
SERVICES := auth-svc ksef-gateway buffer-svc approval-svc notify-svc
SERVICE ?=
PYTEST_ARGS ?=
INFRA_ENV = eval "$$(bash scripts/infra.sh env)"

.PHONY: help setup ui browser run up down chaos infra-up infra-down infra-status test test-unit test-repeat lint fmt migrate bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install uv if missing, sync the locked environment (.venv) and build the web UI (ui/dist)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
	@$(UV) sync --frozen --all-packages --quiet
	@$(MAKE) -s ui

# The web UI: npm ci from the lock (only when the lock changed), then tsc and the copy of the vendored chart
# library (only when a source changed). ui/dist is what the runner serves at / and what a static server would.
UI_SOURCES := $(shell find ui/src ui/static -type f 2>/dev/null) ui/package.json ui/tsconfig.json ui/build.mjs
ui: ui/dist/.built ## build the web UI bundle (npm ci + tsc; Node.js and npm from Debian when missing)

ui/node_modules/.package-lock.json: ui/package-lock.json
	@bash scripts/web-ui.sh node
	@cd ui && npm ci --no-audit --no-fund --loglevel=error

ui/dist/.built: ui/node_modules/.package-lock.json $(UI_SOURCES)
	@cd ui && rm -rf dist && npm run --silent build && touch dist/.built

browser: ## Debian's Chromium for the browser tests (installed when missing)
	@bash scripts/web-ui.sh chromium

run: setup ## start the whole platform in one process (embedded mode) on http://127.0.0.1:8000 (DEMO=0: no demo data)
	@$(UV) run --frozen ksef-hub run $(if $(PORT),--port $(PORT)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
		$(if $(DEMO),$(if $(filter 0 false no off,$(DEMO)),--no-demo,--demo))

up: setup ## the distributed platform: every service its own process over its own PostgreSQL and Kafka (http://127.0.0.1:8080)
	@$(UV) run --frozen ksef-hub up $(if $(PORT),--port $(PORT))

down: ## stop what `make up` started (its PostgreSQL and Kafka included)
	@$(UV) run --frozen ksef-hub down

chaos: setup ## the journey at the issue's scale while services are SIGKILLed, Kafka and PostgreSQL restarted, KSeF fails
	@KSEF_HUB_JOURNEY_SCALE=$(or $(SCALE),1.0) $(UV) run --frozen pytest tests/e2e/test_distributed_journey.py -k chaos -s $(PYTEST_ARGS)

infra-up: ## start PostgreSQL and Kafka on loopback (idempotent)
	@bash scripts/infra.sh up

infra-down: ## stop PostgreSQL and Kafka
	@bash scripts/infra.sh down

infra-status:
	@bash scripts/infra.sh status

test: setup infra-up browser ## set everything up and run the whole suite against real PostgreSQL and Kafka
	@$(INFRA_ENV); $(MAKE) migrate MIGRATE_URL="$$KSEF_HUB_TEST_PG_DSN"
	@$(MAKE) lint
	@$(INFRA_ENV); $(UV) run --frozen pytest $(PYTEST_ARGS)

# `make test-repeat N=20` runs the cross-service e2e tests N times each (pytest-repeat), stopping at the first failure:
# the way to show that a test does not fail by chance. TESTS= narrows it (a path or node id).
N ?= 10
TESTS ?= tests/e2e
test-repeat: setup infra-up ## run the e2e tests N times each (N=10, TESTS=tests/e2e) to catch tests that fail by chance
	@$(INFRA_ENV); $(UV) run --frozen pytest $(TESTS) --count=$(N) -x -q $(PYTEST_ARGS)

test-unit: setup ## only the tests that need no infrastructure
	@$(UV) run --frozen pytest -m "not postgres and not kafka and not browser" $(PYTEST_ARGS)

lint: setup ## ruff, mypy and import-linter (no service imports another; libs/common imports no service)
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy
	@$(UV) run --frozen lint-imports

fmt: setup
	@$(UV) run --frozen ruff format .
	@$(UV) run --frozen ruff check --fix .

# `make migrate MIGRATE_URL=postgresql+asyncpg://...` upgrades every service's schema (or SERVICE=auth-svc only).
migrate: setup ## upgrade each service's schema in the database at MIGRATE_URL
	@test -n "$(MIGRATE_URL)" || { echo "MIGRATE_URL is required (postgresql+asyncpg://...)"; exit 2; }
	@for svc in $(or $(SERVICE),$(SERVICES)); do \
		prefix=$$(case $$svc in auth-svc) echo AUTH;; ksef-gateway) echo GATEWAY;; buffer-svc) echo BUFFER;; \
			approval-svc) echo APPROVAL;; notify-svc) echo NOTIFY;; esac); \
		echo "migrate $$svc"; \
		env "$${prefix}_DB__URL=$(MIGRATE_URL)" $(UV) run --frozen $$svc migrate; \
	done

bench: setup infra-up ## run the benchmarks in bench/ and print their figures (never part of `make test`)
	@$(INFRA_ENV); for b in bench/bench_*.py; do $(UV) run --frozen python "$$b"; done

clean: ## remove the environment, caches and embedded data (infra state stays: make infra-down; rm -rf .cache)
	rm -rf .venv .data .pytest_cache .mypy_cache .ruff_cache .artefacts ui/node_modules ui/dist
