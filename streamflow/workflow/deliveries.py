"""A client's records in flight: produced at once, acknowledged through futures.

``flush()`` after every start made one client do about 2,500 starts/s, each waiting alone
for its batch. Here a record is queued with a delivery callback that completes its future, and
one daemon thread serves the producer's callbacks: a caller waits only for its own record,
while everything produced meanwhile (other threads, coroutines of the async client,
``start_many``) travels in the same batches.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streamflow.errors import PayloadTooLarge

DELIVERY_TIMEOUT_S = 30.0
"""How long a command waits for its acknowledgement before the client reports the cluster
unreachable."""

_POLL_S = 0.05


def _serve(deliveries: weakref.ref[Deliveries]) -> None:
    """Serve delivery callbacks until the client is closed, or dropped without a close (the
    thread holds no strong reference between polls, so a forgotten client does not leak)."""
    while True:
        me = deliveries()
        if me is None or me._closed:
            return
        producer = me._producer
        del me
        producer.poll(_POLL_S)


def check_payload_size(what: str, size: int, limit: int) -> None:
    """Refuse a command over the producer's record limit at the client, naming it: the
    broker's own refusal names neither the instance nor the limit."""
    if size > limit:
        raise PayloadTooLarge(
            f"the {what} is {size} bytes encoded, over the limit of {limit} bytes a record may "
            "have (the producer's message.max.bytes less headroom for headers); pass a "
            "reference (a key, a URL) instead of the data, or raise message.max.bytes in "
            "App(kafka=...) together with the topic's max.message.bytes"
        )


class Deliveries:
    """Produce with a future per record; a background thread serves the callbacks."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def produce(self, topic: str, key: bytes, value: bytes) -> Future[None]:
        """Queue one record; a full local queue is waited out, not failed."""
        self._ensure_thread()
        delivered: Future[None] = Future()

        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is None:
                delivered.set_result(None)
            else:
                delivered.set_exception(KafkaException(err))

        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=report)
                return delivered
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(_POLL_S)

    def produce_many(
        self, topic: str, records: list[tuple[bytes, bytes]]
    ) -> Future[list[tuple[bytes, KafkaError]]]:
        """Queue many records with one future for all: done when each was acknowledged or
        refused, its result the refused ones (key, error). No future or lock per record:
        ``start_many`` is about as fast as the producer itself."""
        self._ensure_thread()
        done: Future[list[tuple[bytes, KafkaError]]] = Future()
        failed: list[tuple[bytes, KafkaError]] = []
        left = [len(records)]
        lock = threading.Lock()
        if not records:
            done.set_result(failed)
            return done

        def report(err: KafkaError | None, msg: Any) -> None:
            with lock:
                if err is not None:
                    failed.append((msg.key(), err))
                left[0] -= 1
                finished = left[0] == 0
            if finished:
                done.set_result(failed)

        produce, poll = self._producer.produce, self._producer.poll
        for key, value in records:
            while True:
                try:
                    produce(topic, value, key, on_delivery=report)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    poll(_POLL_S)
        return done

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=_serve,
                    args=(weakref.ref(self),),
                    name="streamflow-client-deliveries",
                    daemon=True,
                )
                self._thread.start()

    def close(self, timeout: float = DELIVERY_TIMEOUT_S) -> None:
        """Deliver what is queued (up to ``timeout``), then stop serving callbacks."""
        self._producer.flush(timeout)
        self._closed = True
        thread = self._thread
        if thread is not None:
            thread.join(1.0)
