# lambdarec: `make test` and `make demo` each do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS_STAMP := .cache/jars/.resolved
KAFKA_STAMP := .cache/kafka/.resolved
PYTEST_ARGS ?=

.PHONY: setup lint test test-unit test-e2e demo demo-stop bench clean lock redis-server blas chromium

setup: $(STAMP) $(JARS_STAMP) $(KAFKA_STAMP) redis-server blas

# The virtualenv with the locked packages (constraints.txt keeps a fresh install reproducible).
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "lambdarec needs $(PYTHON) (Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# Spark's extra JARs (Delta Lake, the Kafka source), resolved once from Maven Central into .cache/jars
# (later runs are offline).
$(JARS_STAMP): $(STAMP) spark_jobs/jars.py
	$(BIN)/python -m spark_jobs.jars
	@touch $@

# The local Kafka broker (org.apache.kafka:kafka_2.13 and its runtime dependencies) from Maven Central
# into .cache/kafka/libs, apart from Spark's classpath.
$(KAFKA_STAMP): $(STAMP) lambdarec/kafka_broker.py
	$(BIN)/python -m lambdarec.kafka_broker
	@touch $@

# A redis-server binary for the embedded online store (Debian package when missing).
redis-server:
	@bash infra/local/install-redis.sh

# OpenBLAS (libblas.so.3, liblapack.so.3) so Spark MLlib's ALS runs native kernels (Debian's packages when missing).
blas:
	@bash infra/local/install-blas.sh

# Headless Chromium and chromedriver for the browser e2e test (Debian's packages when missing).
chromium:
	@bash infra/local/install-chromium.sh

# ruff (lint + format, [tool.ruff]) and the layering as import contracts ([tool.importlinter]): fails on a
# lint finding, an unformatted file or an import that crosses a layer.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Unit, Spark and integration tests that take seconds each (under 15 minutes on 2 cores). The whole loop
# and the tests that take minutes (marked `e2e` or `long`) run in `make test-e2e`; CI runs both.
test: setup lint
	$(BIN)/python -m pytest --ignore=tests/e2e -m "not e2e and not long" $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The whole loop: `lambdarec demo` (lambdarec_nightly through Airflow's scheduler and spark-submit)
# with its three UIs in headless Chromium, the nightly on a Spark standalone cluster, and every test
# marked `long` (a whole nightly and the promote DAG's logic, the offline evaluation, the replay, jobs
# killed and restarted).
test-e2e: setup chromium
	$(BIN)/python -m pytest -m "e2e or long" $(PYTEST_ARGS)

demo: setup
	$(BIN)/lambdarec demo $(if $(DATASET),--dataset $(DATASET),) $(if $(DATA_PATH),--path $(DATA_PATH),)

# Stops every service `make demo` left running (Airflow with SIGINT, so its workers stop too).
demo-stop:
	@test -x $(BIN)/lambdarec || { echo "nothing to stop: the virtualenv is not set up"; exit 0; }
	$(BIN)/lambdarec demo-stop

bench: setup
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick,)

# Re-pin after changing pyproject.toml dependencies.
lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf data .pytest_cache
