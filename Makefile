# Each target creates or refreshes .venv and installs the project first, so it works on a
# fresh machine with only Python 3.11 and make.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORE   := $(VENV)/.installed-core
ML     := $(VENV)/.installed-ml

.PHONY: demo test test-quick lint bench install clean kafka registry

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# The demo needs only the core dependencies (a first result in under a minute on a fresh
# clone); the fraud demo adds the ml extra; the tests install everything (dev).
$(CORE): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $(CORE)

$(ML): $(CORE)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[ml]"
	@touch $(ML)

install: $(STAMP)

demo: $(CORE)
	@case "$(ARGS)" in *fraud*) $(MAKE) --no-print-directory $(ML) ;; esac
	$(BIN)/stream demo $(ARGS)

# The whole suite on the embedded broker, then the kafka-marked tests (the fault tests among
# them) again on Apache Kafka (Java 17+; its jars are fetched once, see `make kafka`). The
# registry codec's tests run against Apicurio Registry too (fetched once, see `make registry`).
test: lint
	@.ci/ensure-prometheus
	@.ci/ensure-chromium
	@$(BIN)/python -m stream.app.registry_server
	$(BIN)/python -m pytest -q $(ARGS)
	@$(BIN)/python -m stream.app.kafka_broker
	STREAM_TEST_BROKER=kafka $(BIN)/python -m pytest -q -m kafka $(ARGS)

# ruff (pyflakes, bugbear, import order, docstrings on public names, no unexplained broad
# except) and mypy (strict on the pure core), both configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache bench/results/latest.json

# Apache Kafka's broker jars from Maven Central (for `stream broker --engine kafka` and
# STREAM_TEST_BROKER=kafka), pinned and checked: deploy/kafka/.
kafka: $(STAMP)
	$(BIN)/python -m stream.app.kafka_broker

# Apicurio Registry from Maven Central (a real schema registry for the registry codec's
# tests), pinned and checked: deploy/registry/.
registry: $(STAMP)
	$(BIN)/python -m stream.app.registry_server
