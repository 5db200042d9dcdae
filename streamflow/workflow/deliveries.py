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

from streamflow.cluster.record_chunks import split_value
from streamflow.errors import PayloadTooLarge
from streamflow.workflow.messages import Signal, Start, dumps

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


def check_payload_size(what: str, payload: Any, limit: int) -> None:
    """Refuse a payload over the app's limit at the client, naming it: sent, it would only
    fail at the worker (the broker's own refusal names neither the instance nor the limit).
    Called only for a record over the producer's limit, so the encoding is paid rarely."""
    size = len(dumps(payload))
    if size > limit:
        raise PayloadTooLarge(
            f"the {what} is {size} bytes encoded, over the limit of {limit} bytes a payload "
            "may have (App(max_payload_bytes=...)); pass a reference (a key, a URL) instead "
            "of the data"
        )


def event_payload(event: Any) -> Any:
    """What a command carries for the workflow: a start's input, a signal's payload."""
    return event.input if isinstance(event, Start) else getattr(event, "payload", None)


def event_payload_name(event: Any) -> str:
    if isinstance(event, Start):
        return "input"
    if isinstance(event, Signal):
        return f"payload of signal {event.name!r}"
    return type(event).__name__.lower()


class Deliveries:
    """Produce with a future per record; a background thread serves the callbacks. A record
    over the producer's limit goes as chunks (``cluster/record_chunks``), acknowledged once
    every chunk is."""

    def __init__(self, producer: Producer, record_bytes: int) -> None:
        self._producer = producer
        self.record_bytes = record_bytes
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def produce(self, topic: str, key: bytes, value: bytes) -> Future[None]:
        """Queue one record; a full local queue is waited out, not failed."""
        self._ensure_thread()
        delivered: Future[None] = Future()
        values = self._chunked(key, value)
        left = [len(values)]
        lock = threading.Lock()

        def report(err: KafkaError | None, _msg: Any) -> None:
            with lock:
                left[0] -= 1
                if delivered.done():
                    return
                if err is not None:
                    delivered.set_exception(KafkaException(err))
                elif not left[0]:
                    delivered.set_result(None)

        for part in values:
            while True:
                try:
                    self._producer.produce(topic, part, key, on_delivery=report)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(_POLL_S)
        return delivered

    def _chunked(self, key: bytes, value: bytes) -> list[bytes]:
        if len(key) + len(value) <= self.record_bytes:
            return [value]
        return split_value(key, value, self.record_bytes)

    def produce_many(
        self, topic: str, records: list[tuple[bytes, bytes]]
    ) -> Future[list[tuple[bytes, KafkaError]]]:
        """Queue many records with one future for all: done when each was acknowledged or
        refused, its result the refused ones (key, error). No future or lock per record:
        ``start_many`` is about as fast as the producer itself."""
        self._ensure_thread()
        done: Future[list[tuple[bytes, KafkaError]]] = Future()
        failed: list[tuple[bytes, KafkaError]] = []
        limit = self.record_bytes
        if any(len(k) + len(v) > limit for k, v in records):
            records = [(k, part) for k, v in records for part in self._chunked(k, v)]
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
