"""``auto`` speaks the consumer protocol where the brokers offer it and falls back to classic,
with a log line, where they do not (or cannot be asked)."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamflow.runtime.group_protocol import PROTOCOLS_CONFIG, resolve


class _Entry:
    def __init__(self, value: str) -> None:
        self.value = value


class _Node:
    id = 1


class _Cluster:
    controller = _Node()
    nodes = (_Node(),)


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


class _Admin:
    """The two admin calls ``resolve`` makes, answering with a broker's configuration."""

    def __init__(self, configs: dict[str, _Entry] | None) -> None:
        self.configs = configs
        self.asked = 0

    def describe_cluster(self, request_timeout: float) -> Future[Any]:
        self.asked += 1
        return _done(_Cluster())

    def describe_configs(self, resources: list[Any]) -> dict[Any, Future[Any]]:
        if self.configs is None:
            raise KafkaException(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))
        return {resources[0]: _done(self.configs)}


def test_auto_takes_the_consumer_protocol_when_the_brokers_offer_it() -> None:
    admin = _Admin({PROTOCOLS_CONFIG: _Entry("classic,consumer")})
    assert resolve("auto", admin, "app") == "consumer"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("configs", "why"),
    [
        ({}, "predate KIP-848"),
        ({PROTOCOLS_CONFIG: _Entry("classic")}, "is 'classic'"),
        (None, "could not be read"),
    ],
)
def test_auto_falls_back_to_classic_with_a_log_line_saying_why(
    configs: dict[str, _Entry] | None, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="streamflow.runtime.group_protocol"):
        assert resolve("auto", _Admin(configs), "app") == "classic"  # type: ignore[arg-type]
    assert len(caplog.records) == 1 and why in caplog.records[0].getMessage()


def test_a_protocol_named_by_the_app_is_kept_without_asking() -> None:
    admin = _Admin(None)
    assert resolve("classic", admin, "app") == "classic"  # type: ignore[arg-type]
    assert resolve("consumer", admin, "app") == "consumer"  # type: ignore[arg-type]
    assert admin.asked == 0
