# streamflow: one command from a fresh clone to a tested build.
#
#   make test        venv + package + Kafka jars, start Kafka (or reuse a running one), whole suite,
#                    stop Kafka if this run started it; exits with pytest's status
#   make unit        tests that need no broker
#   make kafka       start the local broker (`make kafka-stop` stops it); `make test` reuses it
#   make chaos       the crash and fault tests at full size (10,000 transfers, 200,000 records,
#                    100,000 windowed clicks, 60,000 joined views and clicks)
#   make lint        ruff (lint + format check), mypy --strict on streamflow/ and topologies/,
#                    imports down the layers (tests/check_layers.py), no module over 450 lines
#                    that does not say why (tests/check_sizes.py)
#
# Kafka comes from Maven Central jars via `mvn` (cached in ~/.cache/streamflow, or
# $STREAMFLOW_CACHE_DIR). Set STREAMFLOW_BOOTSTRAP=host:port to test against an existing cluster,
# or STREAMFLOW_TEST_KAFKA=testcontainers to use Docker instead.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SF := $(VENV)/bin/streamflow
KAFKA_DIR ?= $(CURDIR)/.cache/kafka-run
PYTEST_ARGS ?=
# Re-install only when the package definition changes.
INSTALLED := $(VENV)/.installed

.PHONY: browser venv kafka-jars kafka kafka-stop kafka-status test unit chaos clean demo bench bench-peers bench-peers-deps bench-operate lint format

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,dev]'
	touch $@

kafka-jars: venv
	$(SF) dev kafka jars

kafka: venv
	$(SF) dev kafka start --dir $(KAFKA_DIR)

kafka-stop: venv
	$(SF) dev kafka stop --dir $(KAFKA_DIR)

kafka-status: venv
	$(SF) dev kafka status --dir $(KAFKA_DIR)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) tests/check_layers.py
	$(PY) tests/check_sizes.py

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

unit: venv
	$(PY) -m pytest -m "not kafka" $(PYTEST_ARGS)

# docker/with-kafka.sh provides the broker: reuses or starts the local one (and then stops it,
# whatever the outcome), or uses $STREAMFLOW_BOOTSTRAP / testcontainers. Exit status: pytest's.
WITH_KAFKA := SF=$(SF) KAFKA_DIR=$(KAFKA_DIR) docker/with-kafka.sh

# The console's browser test drives Debian's chromium through Playwright (never a downloaded
# browser): installed here when missing and apt-get may run; else that test skips, saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	    echo "chromium could not be installed: the console's browser test will skip"; \
	  else echo "no chromium (install Debian's chromium package): the console's browser test will skip"; fi

test: venv kafka-jars browser
	@$(WITH_KAFKA) $(PY) -m pytest $(PYTEST_ARGS)

# The big fault runs: never part of `make test`, which runs the same tests at a smaller size.
chaos: venv kafka-jars
	@SF_CRASH_TRANSFERS=10000 SF_CHAOS_RECORDS=200000 SF_WINDOW_CRASH=1 SF_WINDOW_EVENTS=100000 SF_JOIN_EVENTS=60000 SF_JOIN_KILLS=8 $(WITH_KAFKA) $(PY) -m pytest -s tests/crash $(PYTEST_ARGS)

clean:
	-test -x $(SF) && $(SF) dev kafka stop --dir $(KAFKA_DIR)
	rm -rf $(VENV) .cache .pytest_cache .hypothesis *.egg-info

# The demos: a real broker, real worker processes, a SIGKILL, and a check of the result
# against a plain-Python truth.
demo: venv kafka-jars
	@$(WITH_KAFKA) sh -c 'echo "== order totals: streams, exactly once ==" && \
	  $(PY) topologies/run_demo.py --bootstrap $$KAFKA_BOOTSTRAP && echo && \
	  echo "== payments: durable workflows over entities ==" && \
	  $(PY) topologies/demo_payments.py --bootstrap $$KAFKA_BOOTSTRAP'

# Benchmarks: never part of `make test`. Prints a table and writes bench/results.json.
# DBOS (the peer of the I/O-bound workflow rows) lives in a venv of its own.
DBOS_VENV := .cache/dbos-venv

$(DBOS_VENV)/.installed:
	test -x $(DBOS_VENV)/bin/python || $(PYTHON) -m venv $(DBOS_VENV)
	$(DBOS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DBOS_VENV)/bin/python -m pip install --quiet 'dbos>=3.4,<4'
	touch $@

# The peers of bench/peers_bench.py, each in an environment of its own, never the package's:
# Quix Streams from PyPI in a venv, Kafka Streams (the broker's version) as a jar built by mvn.
QUIX_VENV := .cache/bench-quix-venv
KSTREAMS_JAR := bench/kstreams/target/kstreams-bench.jar

$(QUIX_VENV)/.installed:
	test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet 'quixstreams==3.28.1'
	touch $@

$(KSTREAMS_JAR): bench/kstreams/pom.xml $(wildcard bench/kstreams/src/main/java/bench/*.java)
	cd bench/kstreams && mvn -q package

bench-peers-deps: $(QUIX_VENV)/.installed $(KSTREAMS_JAR)

PEERS_ENV := SF_QUIX_PYTHON=$(CURDIR)/$(QUIX_VENV)/bin/python SF_KSTREAMS_JAR=$(CURDIR)/$(KSTREAMS_JAR)
PEERS_ARGS ?=

bench: venv kafka-jars $(DBOS_VENV)/.installed bench-peers-deps
	@SF_DBOS_PYTHON=$(CURDIR)/$(DBOS_VENV)/bin/python $(PEERS_ENV) $(WITH_KAFKA) sh -c '$(PY) bench/run.py --bootstrap $$KAFKA_BOOTSTRAP && $(PY) bench/peers_bench.py --bootstrap $$KAFKA_BOOTSTRAP $(PEERS_ARGS) && $(PY) bench/restore_bench.py --bootstrap $$KAFKA_BOOTSTRAP --kstreams-jar $(CURDIR)/$(KSTREAMS_JAR) && $(PY) bench/rebalance_bench.py --bootstrap $$KAFKA_BOOTSTRAP'

# Operations only: restore from a changelog beside Kafka Streams, rebalances under both group
# protocols, failover with and without a standby.
bench-operate: venv kafka-jars $(KSTREAMS_JAR)
	@$(WITH_KAFKA) sh -c '$(PY) bench/restore_bench.py --bootstrap $$KAFKA_BOOTSTRAP --kstreams-jar $(CURDIR)/$(KSTREAMS_JAR) && $(PY) bench/rebalance_bench.py --bootstrap $$KAFKA_BOOTSTRAP'

# Only streamflow against Kafka Streams and Quix Streams (PEERS_ARGS="--records 100000 --rounds 1").
bench-peers: venv kafka-jars bench-peers-deps
	@$(PEERS_ENV) $(WITH_KAFKA) sh -c '$(PY) bench/peers_bench.py --bootstrap $$KAFKA_BOOTSTRAP $(PEERS_ARGS)'
