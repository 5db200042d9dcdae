# streamflow: one command from a fresh clone to a tested build.
#
#   make test        venv + package + Kafka jars, start Kafka (or reuse a running one), whole suite,
#                    stop Kafka if this run started it; exits with pytest's status
#   make unit        tests that need no broker
#   make kafka       start the local broker (`make kafka-stop` stops it); `make test` reuses it
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

.PHONY: venv kafka-jars kafka kafka-stop kafka-status test unit clean demo bench

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

kafka-jars: venv
	$(SF) dev kafka jars

kafka: venv
	$(SF) dev kafka start --dir $(KAFKA_DIR)

kafka-stop: venv
	$(SF) dev kafka stop --dir $(KAFKA_DIR)

kafka-status: venv
	$(SF) dev kafka status --dir $(KAFKA_DIR)

unit: venv
	$(PY) -m pytest -m "not kafka" $(PYTEST_ARGS)

# The broker is stopped whatever pytest's outcome (and on Ctrl-C), but only if this run
# started it; the recipe's exit status is pytest's.
test: venv kafka-jars
	@started=0; \
	stop_kafka() { \
	  if [ "$$started" = 1 ]; then \
	    $(SF) dev kafka stop --dir $(KAFKA_DIR) >/dev/null 2>&1 \
	      || echo "warning: could not stop Kafka in $(KAFKA_DIR); run make kafka-stop" >&2; \
	  fi; \
	}; \
	trap 'stop_kafka; exit 130' INT TERM; \
	if [ -z "$${STREAMFLOW_BOOTSTRAP:-}" ] && [ "$${STREAMFLOW_TEST_KAFKA:-local}" = local ]; then \
	  if $(SF) dev kafka status --dir $(KAFKA_DIR) >/dev/null 2>&1; then \
	    echo "reusing the Kafka already running in $(KAFKA_DIR)"; \
	  else \
	    started=1; \
	    $(SF) dev kafka start --dir $(KAFKA_DIR) || { rc=$$?; stop_kafka; exit $$rc; }; \
	  fi; \
	fi; \
	STREAMFLOW_KAFKA_DIR=$(KAFKA_DIR) $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	stop_kafka; \
	exit $$rc

clean:
	-test -x $(SF) && $(SF) dev kafka stop --dir $(KAFKA_DIR)
	rm -rf $(VENV) .cache .pytest_cache .hypothesis *.egg-info

# The demos: a real broker (started here unless one runs), real worker processes, a SIGKILL,
# and a check of the result against a plain-Python truth.
demo: venv kafka-jars
	@started=0; \
	if [ -z "$${STREAMFLOW_BOOTSTRAP:-}" ]; then \
	  if ! $(SF) dev kafka status --dir $(KAFKA_DIR) >/dev/null 2>&1; then \
	    started=1; $(SF) dev kafka start --dir $(KAFKA_DIR) >/dev/null || exit $$?; \
	  fi; \
	  bootstrap=$$($(SF) dev kafka status --dir $(KAFKA_DIR) | sed -n 's/^bootstrap=//p'); \
	else bootstrap=$$STREAMFLOW_BOOTSTRAP; fi; \
	echo "== order totals: streams, exactly once =="; \
	$(PY) topologies/run_demo.py --bootstrap $$bootstrap; rc=$$?; \
	if [ $$rc = 0 ]; then \
	  echo; echo "== payments: durable workflows over entities =="; \
	  $(PY) topologies/demo_payments.py --bootstrap $$bootstrap; rc=$$?; \
	fi; \
	if [ "$$started" = 1 ]; then $(SF) dev kafka stop --dir $(KAFKA_DIR) >/dev/null; fi; \
	exit $$rc

# Benchmarks: never part of `make test`. Prints a table and writes bench/results.json.
bench: venv kafka-jars
	@started=0; \
	if [ -z "$${STREAMFLOW_BOOTSTRAP:-}" ]; then \
	  if ! $(SF) dev kafka status --dir $(KAFKA_DIR) >/dev/null 2>&1; then \
	    started=1; $(SF) dev kafka start --dir $(KAFKA_DIR) >/dev/null || exit $$?; \
	  fi; \
	  bootstrap=$$($(SF) dev kafka status --dir $(KAFKA_DIR) | sed -n 's/^bootstrap=//p'); \
	else bootstrap=$$STREAMFLOW_BOOTSTRAP; fi; \
	$(PY) bench/run.py --bootstrap $$bootstrap; rc=$$?; \
	if [ "$$started" = 1 ]; then $(SF) dev kafka stop --dir $(KAFKA_DIR) >/dev/null; fi; \
	exit $$rc
