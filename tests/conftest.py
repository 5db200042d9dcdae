"""Fixtures shared by the whole suite: a real Kafka cluster and per-test topics.

Where the broker comes from, first match wins:
1. `STREAMFLOW_BOOTSTRAP=host:port` — an existing cluster (never started or stopped here);
2. `STREAMFLOW_TEST_KAFKA=testcontainers` — testcontainers' Kafka module (needs Docker and the
   `docker` extra; image from `STREAMFLOW_TEST_KAFKA_IMAGE`);
3. otherwise the local jars: the cluster `streamflow dev kafka start` / `make kafka` left running
   in `.cache/kafka-run` (or `$STREAMFLOW_KAFKA_DIR`), else one started for this session and
   stopped at its end.

Only tests marked `kafka` get a broker. A test that uses `kafka_bootstrap` (directly or through
`new_topic`) is marked automatically, so `pytest -m "not kafka"` never starts Kafka.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from tests.kafka_helpers import FAST_FAILOVER, TopicFactory, admin_client, wait_for_brokers

REPO_ROOT = Path(__file__).resolve().parent.parent
# Kafka 4.x (Apache Kafka 4.0) packaged by Confluent: the image testcontainers' module drives.
DEFAULT_TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:8.0.0"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the marker must be on the item before `-m` deselection looks at it.
    for item in items:
        uses_kafka = "kafka_bootstrap" in getattr(item, "fixturenames", ())
        if uses_kafka and item.get_closest_marker("kafka") is None:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """`host:port[,…]` of a Kafka 4 cluster that runs transactions (see the module docstring)."""
    explicit = os.environ.get("STREAMFLOW_BOOTSTRAP")
    if explicit:
        wait_for_brokers(explicit)
        yield explicit
        return
    mode = os.environ.get("STREAMFLOW_TEST_KAFKA", "local")
    if mode == "testcontainers":
        yield from _testcontainers_kafka()
        return
    if mode != "local":
        raise pytest.UsageError(
            f"STREAMFLOW_TEST_KAFKA={mode!r}: use 'local' (default) or 'testcontainers', "
            "or set STREAMFLOW_BOOTSTRAP to use an existing cluster"
        )

    from streamflow.dev import LocalKafka

    run_dir = os.environ.get("STREAMFLOW_KAFKA_DIR") or REPO_ROOT / ".cache" / "kafka-run"
    kafka = LocalKafka(run_dir)
    if kafka.is_running():
        yield kafka.bootstrap  # someone else's (make kafka): theirs to stop
        return
    bootstrap = kafka.start()
    try:
        yield bootstrap
    finally:
        kafka.stop()


def _testcontainers_kafka() -> Iterator[str]:
    try:
        try:
            from testcontainers.community.kafka import KafkaContainer  # testcontainers >= 4.15
        except ImportError:
            from testcontainers.kafka import KafkaContainer
    except ImportError as exc:
        raise pytest.UsageError(
            "STREAMFLOW_TEST_KAFKA=testcontainers needs the docker extra: "
            "pip install -e '.[test,docker]'"
        ) from exc
    image = os.environ.get("STREAMFLOW_TEST_KAFKA_IMAGE", DEFAULT_TESTCONTAINERS_IMAGE)
    container = (
        KafkaContainer(image)
        .with_kraft()
        # The module sets the offsets topic for one broker but not the transaction log, whose
        # default replication factor of 3 would make init_transactions() wait forever.
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container:
        bootstrap = container.get_bootstrap_server()
        wait_for_brokers(bootstrap)
        yield bootstrap


@pytest.fixture
def three_brokers(tmp_path: Path) -> Iterator[Any]:
    """A local 3-broker cluster of this test's own (the local jars), stopped after it, with
    `PROXIED` listeners so a test can cut a client off it (`cluster.proxies()`)."""
    from streamflow.dev import LocalKafka

    cluster = LocalKafka(
        tmp_path / "kafka3", brokers=3, extra_properties=FAST_FAILOVER, proxied=True
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return admin_client(kafka_bootstrap)


@pytest.fixture
def topic_factory(
    kafka_admin: AdminClient, request: pytest.FixtureRequest
) -> Iterator[TopicFactory]:
    """`topic_factory(partitions=3, config={...})` → a fresh topic no other test ever sees."""
    factory = TopicFactory(kafka_admin, prefix=request.node.name[:40])
    yield factory
    factory.delete_all()


@pytest.fixture
def new_topic(topic_factory: TopicFactory) -> TopicFactory:
    """Alias of `topic_factory` that reads well at the call site: `new_topic(partitions=2)`."""
    return topic_factory
