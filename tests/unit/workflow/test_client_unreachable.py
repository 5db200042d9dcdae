"""A client whose cluster is not there says so in one line, within seconds, and librdkafka's
own log lines stay off the terminal. (Nothing listens on 127.0.0.1:1: a real refusal.)"""

from __future__ import annotations

import time

import pytest

from streamflow import App
from streamflow.errors import KafkaUnavailable


def test_a_start_to_nothing_listening_fails_in_one_clear_line(capfd) -> None:
    app = App("nowhere")

    @app.workflow
    async def flow(ctx, n: int) -> int:
        return n

    client = app.client("127.0.0.1:1")
    began = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:1") as failed:
        client.start(flow, id="x", input=1)
    assert time.monotonic() - began < 20
    assert "is the broker running" in str(failed.value)
    out, err = capfd.readouterr()
    assert "rdkafka" not in out + err and "FAIL|" not in out + err
    client.close(timeout=0)  # nothing will ever be delivered: no flush to wait out


def test_a_client_dropped_without_close_does_not_leave_its_thread_behind() -> None:
    import gc

    from confluent_kafka import Producer

    from streamflow.kafka.client_log import LIBRDKAFKA_LOGGER
    from streamflow.workflow.deliveries import Deliveries

    deliveries = Deliveries(
        Producer({"bootstrap.servers": "127.0.0.1:1", "logger": LIBRDKAFKA_LOGGER}), 900_000
    )
    deliveries.produce("t", b"k", b"v")
    thread = deliveries._thread
    assert thread is not None and thread.is_alive()
    del deliveries
    gc.collect()
    thread.join(2)
    assert not thread.is_alive()
