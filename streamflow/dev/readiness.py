"""When a freshly started cluster is usable: the probes `LocalKafka` waits on.

"Listening" is not "ready": the transaction coordinator answers only after it has created and
loaded `__transaction_state`, and the group coordinator after `__consumer_offsets`. Waiting for
both here keeps the first exactly-once test from racing the broker's own start-up.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping

from streamflow.dev.broker_config import HOST, ClusterSpec
from streamflow.errors import DevKafkaError

log = logging.getLogger(__name__)

PROBE_CODE = "from streamflow.dev.readiness import _probe_main; _probe_main()"
"""What the group-coordinator probe's child process runs (``_probe_group_coordinator``)."""


def wait_listening(port: int, deadline: float, check_alive: Callable[[], None]) -> bool:
    """Poll a TCP connect to 127.0.0.1:port until it succeeds (True) or the deadline (False).

    Cheap, and it keeps the Kafka clients below from starting their exponential reconnect
    backoff against a port nobody listens on yet.
    """
    while time.monotonic() < deadline:
        check_alive()
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def wait_for_cluster(
    spec: ClusterSpec,
    deadline: float,
    check_alive: Callable[[], None],
    client_settings: Mapping[str, str] | None = None,
) -> None:
    """Every node registered as a broker, then a transaction and a group coordinator answer.

    `check_alive` raises if a node died meanwhile, so a crash is reported at once with its log
    instead of after the timeout. `client_settings` log the probes in (a secured cluster's
    admin user).
    """
    # Imported here: `streamflow dev kafka status/stop` should not pay for loading librdkafka.
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient

    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": spec.bootstrap,
        "log_level": 0,  # the probes retry by design; librdkafka's warnings would only alarm
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        **(client_settings or {}),
    }
    last_error = "no answer yet"

    def remaining(cap: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DevKafkaError(
                f"local Kafka at {spec.bootstrap} did not become ready in time (last: "
                f"{last_error}); see the broker logs named by `streamflow dev kafka status`"
            )
        return min(cap, left)

    admin = AdminClient(config)
    expected = {node.node_id for node in spec.nodes}
    while True:
        check_alive()
        try:
            registered = set(admin.list_topics(timeout=remaining(2.0)).brokers)
            if registered >= expected:
                break
            last_error = f"brokers {sorted(registered)} of {sorted(expected)} registered"
        except KafkaException as exc:
            last_error = str(exc)
        log.debug("waiting for brokers: %s", last_error)
        time.sleep(0.1)

    def new_probe() -> Producer:
        return Producer({**config, "transactional.id": f"streamflow-dev-probe-{uuid.uuid4().hex}"})

    producer = new_probe()
    while True:
        check_alive()
        try:
            producer.init_transactions(remaining(10.0))
            producer.begin_transaction()
            producer.commit_transaction(remaining(10.0))
            break
        except KafkaException as exc:
            last_error = f"transaction coordinator: {exc}"
            log.debug("waiting for transactions: %s", last_error)
            if not exc.args[0].retriable():
                producer = new_probe()  # a fatal error poisons the producer; start over
            time.sleep(0.2)

    # DescribeGroups, not OffsetFetch: librdkafka 2.x (seen with 2.16) segfaults in an
    # AdminClient's list_consumer_group_offsets() when the coordinator answers "loading", as it
    # does right here, because it hands the error to a consumer-group handle an admin client
    # lacks. DescribeGroups has aborted the process in the same state too (once in a full test
    # run: the whole pytest session died), so this probe runs in a child process: a crash there
    # is one failed try, not the caller's end.
    while True:
        check_alive()
        answer = _probe_group_coordinator(config, remaining(5.0))
        if answer is None:
            return
        last_error = f"group coordinator: {answer}"
        log.debug("waiting for the group coordinator: %s", last_error)
        time.sleep(0.2)


def _probe_group_coordinator(config: Mapping[str, object], timeout: float) -> str | None:
    """None once the group coordinator answers; else why not (a crash of the probe included)."""
    request = json.dumps({"config": dict(config), "timeout": timeout})
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE_CODE],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout + 15,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout + 15:.0f} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"the probe process died of signal {-done.returncode} (a librdkafka crash)"
    return done.stdout.strip() or done.stderr.strip()[-300:] or f"exit {done.returncode}"


def _probe_main() -> None:
    """The child's side: one DescribeGroups; exit 0 when the coordinator answered."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    request = json.loads(sys.stdin.read())
    admin = AdminClient(request["config"])
    try:
        futures = admin.describe_consumer_groups(
            ["streamflow-dev-probe"], request_timeout=request["timeout"]
        )
        for future in futures.values():
            future.result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            print(exc, flush=True)
            sys.exit(1)
    sys.exit(0)
