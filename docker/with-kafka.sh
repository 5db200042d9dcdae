#!/usr/bin/env bash
# Run a command with a Kafka broker available, for the Makefile's test, demo and bench targets.
#
# The broker's address is exported as KAFKA_BOOTSTRAP. STREAMFLOW_BOOTSTRAP set: that cluster is
# used as it is. STREAMFLOW_TEST_KAFKA=testcontainers:
# the test session starts its own container. Otherwise the local broker of $KAFKA_DIR (Maven
# jars, no Docker) is reused if it runs, or started — and then stopped again afterwards, whatever
# the command's outcome. The command's exit status is the script's.
set -uo pipefail
sf=${SF:-streamflow}
kafka_dir=${KAFKA_DIR:?KAFKA_DIR must name the run dir of the local broker}
started=0
stop_kafka() {
  if [ "$started" = 1 ]; then
    "$sf" dev kafka stop --dir "$kafka_dir" >/dev/null 2>&1 \
      || echo "warning: could not stop Kafka in $kafka_dir; run make kafka-stop" >&2
  fi
}
trap 'stop_kafka; exit 130' INT TERM
if [ -z "${STREAMFLOW_BOOTSTRAP:-}" ] && [ "${STREAMFLOW_TEST_KAFKA:-local}" = local ]; then
  if "$sf" dev kafka status --dir "$kafka_dir" >/dev/null 2>&1; then
    echo "reusing the Kafka already running in $kafka_dir" >&2
  else
    started=1
    # --clean: a broker started here is stopped here, so its data is this run's only. Kept
    # from run to run, every test's topics piled up until the broker ran out of file
    # descriptors (seen after a day of runs: ~20,000 partition directories).
    "$sf" dev kafka start --clean --dir "$kafka_dir" >/dev/null || { rc=$?; stop_kafka; exit $rc; }
  fi
  KAFKA_BOOTSTRAP=$("$sf" dev kafka status --dir "$kafka_dir" | sed -n 's/^bootstrap=//p')
else
  KAFKA_BOOTSTRAP=${STREAMFLOW_BOOTSTRAP:-}
fi
# KAFKA_BOOTSTRAP, not STREAMFLOW_BOOTSTRAP: the test session finds the local broker through
# STREAMFLOW_KAFKA_DIR, and tests of the local launcher itself run only when it does.
export KAFKA_BOOTSTRAP
export STREAMFLOW_KAFKA_DIR=$kafka_dir
"$@"
rc=$?
stop_kafka
exit $rc
