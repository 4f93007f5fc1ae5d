# gpu-rehearsal — `make help` lists the targets. Later parts add deploy-aws, deploy-azure,
# bench and destroy as they land; only targets that work are listed here.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The first Python >= 3.11 on PATH (override: make setup PYTHON=/path/to/python3.12).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian/Ubuntu packages the test suite needs (installed by `make test-deps`, as root).
APT_PACKAGES :=

.PHONY: help setup test-deps test lint check compare clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv and install gpu-rehearsal with its dev tools (no root needed)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "setup: no Python >= 3.11 found — install one (macOS: brew install python@3.12; Debian/Ubuntu: apt install python3) or pass PYTHON=/path/to/python3.11" >&2; exit 1; fi
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)
	@echo "setup: ready ($$($(PY) --version)); next: make test, make compare"

test-deps: ## Install the system packages the tests need (apt-get; run as root, CI does)
	@if [ -z "$(strip $(APT_PACKAGES))" ]; then echo "test-deps: no system packages needed"; exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "test-deps: needs apt-get (Debian/Ubuntu) to install: $(APT_PACKAGES)" >&2; exit 1; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "test-deps: all present"; exit 0; fi; \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing

lint: setup ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint ## Lint, then run the whole test suite (pytest)
	$(PY) -m pytest

check: setup ## Validate rig.toml and print the resolved profile
	$(PY) -m rig check

compare: setup ## The planned PC's GPU vs the cloud stand-ins, with $/h and sources
	$(PY) -m rig catalog

clean: ## Remove .venv and caches (never touches .state/ or results/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
