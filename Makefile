# GridStream: `make run` (demo on the local stack) and `make test` (every check) are the two
# commands a new user needs; both set up whatever is missing first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
GO ?= go
TOOLS_BIN := .tools/bin
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# The `tool` lines of tools/<dir>/go.mod, built into .tools/bin once, then nothing until go.mod
# or go.sum change: the stamp is named by their content, not their time, so a restored .tools/
# (a CI cache) counts after a fresh checkout.
tools_stamp = $(TOOLS_BIN)/.$(1)-tools-$(shell cat tools/$(1)/go.mod tools/$(1)/go.sum 2>/dev/null | sha256sum | cut -c1-16)
define go_tools
@command -v $(GO) >/dev/null || { echo "$(GO) not found: install Go 1.26 or newer"; exit 1; }
cd tools/$(1) && GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOBIN=$(CURDIR)/$(TOOLS_BIN) $(GO) install tool
@rm -f $(TOOLS_BIN)/.$(1)-tools-*
@touch $@
endef

.DEFAULT_GOAL := help
.PHONY: help setup venv jvm redis registry run demo jemalloc lint typecheck schemas-check k8s-tools k8s-check pr-check test test-unit test-k8s test-flink test-stack hunt fuzz bench soak stack-up stack-down stack-status doctor lock clean FORCE

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: venv jvm redis jemalloc registry ## Install everything missing: the venv, the JVM artifacts, Redis, jemalloc, the registry.

venv: $(VENV)/.installed ## The Python venv from requirements.lock (the project installed editable).
$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (apt-get install python3.11 python3.11-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync -q --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

jvm: .jvm/.installed ## The Kafka broker, ZooKeeper, the Flink Kafka connector (jvm/pom.xml) and jvm/src's jar.
.jvm/.installed: jvm/pom.xml $(shell find jvm/src -name '*.java')
	@command -v mvn >/dev/null || { echo "mvn not found: apt-get install maven"; exit 1; }
	@command -v java >/dev/null || { echo "java not found: apt-get install openjdk-17-jre-headless"; exit 1; }
	rm -rf .jvm
	mvn -q -B -f jvm/pom.xml package
	@touch $@

redis: ## redis-server, from the distribution's packages when missing.
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null || { echo "redis-server still missing: apt-get install redis-server"; exit 1; }

# Found as the soak finds it (ctypes asks /sbin/ldconfig: not on a user's PATH).
HAS_JEMALLOC = $(PYTHON) -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('jemalloc'))"
jemalloc: ## libjemalloc2 (the soak's TaskManager runs on it, as in Flink's image), when missing.
	@$(HAS_JEMALLOC) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libjemalloc2 >/dev/null; }
	@$(HAS_JEMALLOC) || { echo "libjemalloc2 still missing: apt-get install libjemalloc2"; exit 1; }

# The schema registry, pinned in tools/registry/go.mod (its `tool` line): `go install ...@v0.2.1`
# fails here (it asks the module proxy for the module's version list, which is refused), a
# module's pinned tool does not. About 25 s to fetch the modules and 65 s to build cold; 31 MB.
REGISTRY_STAMP := $(call tools_stamp,registry)
registry: $(REGISTRY_STAMP) ## AxonOps Schema Registry (v0.2.1, tools/registry) into .tools/bin.
$(REGISTRY_STAMP): $(if $(wildcard $(TOOLS_BIN)/schema-registry),,FORCE)  # or when it is gone
	$(call go_tools,registry)

FORCE:

run: setup ## Start the local stack and run the demo on it, then print what happened.
	$(PY) -m gridstream.cli stack up
	$(PY) -m gridstream.cli demo

lint: venv ## ruff check and ruff format --check.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv ## mypy --strict on functions/, state/, schemas/.
	$(VENV)/bin/mypy

# pytest exits 5 when a tier has no test yet; that is not a failure of the tier.
PYTEST = $(PY) -m pytest -W ignore::DeprecationWarning
tier = $(PYTEST) -m $(1) $(2); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-unit: venv ## Pure-Python tests: no JVM, no servers.
	@$(call tier,unit)

test-flink: setup ## The real jobs on a local Flink MiniCluster.
	@$(call tier,flink)

test-stack: setup ## Real Kafka, registry, Redis and a Flink session cluster, started by the tests.
	@$(call tier,stack)

schemas-check: venv ## The BACKWARD_TRANSITIVE gate over every schema chain in schemas/avro.
	$(PY) -m schemas.cli check

# helm and kubeconform, pinned in tools/k8s/go.mod (its `tool` lines): helm takes minutes cold.
K8S_TOOLS_STAMP := $(call tools_stamp,k8s)
k8s-tools: $(K8S_TOOLS_STAMP) ## Build helm and kubeconform into .tools/bin (pinned in tools/k8s/go.mod).
$(K8S_TOOLS_STAMP):
	$(call go_tools,k8s)

k8s-check: venv k8s-tools ## The Helm chart: lint, render each environment, validate every manifest offline.
	$(PY) -m devtools.k8scheck

test-k8s: venv k8s-tools ## The chart's tests: real renders pass, misspelled fields fail (no cluster).
	@$(call tier,k8s)

PR_BODY ?= /dev/stdin
pr-check: ## Check a pull request description for Safety Impact and Grid Impact (PR_BODY=file).
	python3 -m devtools.prcheck --body-file $(PR_BODY)

test: setup lint typecheck schemas-check k8s-check test-unit test-k8s test-flink test-stack ## Lint, types, the schema and chart gates, every test tier.

HUNT ?= 20
hunt: venv ## The decision functions' Hypothesis properties with HUNT (20) times their examples, new ones each run.
	GRIDSTREAM_HUNT=$(HUNT) $(PYTEST) -m unit tests/unit/functions

FUZZ_SECONDS ?= 600
FUZZ_TOPICS ?= scada.telemetry iot.telemetry device.registry weather.observations dr.events operator.approvals
fuzz: venv ## Fuzz each input topic's decoders FUZZ_SECONDS (600) each; corpus, findings in .fuzz/.
	@for topic in $(FUZZ_TOPICS); do \
	  mkdir -p .fuzz/corpus/$$topic .fuzz/findings && \
	  PYTHONPATH=$(CURDIR) $(PY) -m tests.fuzz.decode $$topic .fuzz/corpus/$$topic \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	    -artifact_prefix=.fuzz/findings/$$topic- 2>&1 | grep -v '^INFO: Instrumenting'; \
	  [ $${PIPESTATUS[0]} -eq 0 ] || { echo "fuzz: $$topic failed; replay: PYTHONPATH=. $(PY) -m tests.fuzz.decode $$topic .fuzz/findings/$$topic-crash-..."; exit 1; }; \
	done

BENCH_ARGS ?=
bench: setup ## The side-by-side benchmark (long; BENCH_ARGS="--smoke": about 1.5 minutes).
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/bench.py $(BENCH_ARGS)

SOAK_MINUTES ?= 30
SOAK_ARGS ?=
soak: setup ## Device-control at half its measured max for SOAK_MINUTES (30): memory, state, timers flat.
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

stack-up: setup ## Start the local stack (idempotent).
	$(PY) -m gridstream.cli stack up

stack-down: venv ## Stop what `stack-up` started.
	$(PY) -m gridstream.cli stack down

stack-status: venv ## Show each component of the local stack and whether it answers.
	$(PY) -m gridstream.cli stack status

doctor: venv ## Check Java, the JVM artifacts, Redis, the registry, the worker's Python, the ports.
	$(PY) -m gridstream.cli doctor

lock: ## Re-resolve requirements.lock from pyproject.toml.
	uv pip compile pyproject.toml --group dev --override benchmarks/overrides.txt --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -q -o requirements.lock

clean: ## Remove the venv, the JVM artifacts, the built tools and the local stack's data.
	rm -rf $(VENV) .jvm .stack .tools
