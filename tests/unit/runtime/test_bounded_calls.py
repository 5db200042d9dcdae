"""Transaction calls with a deadline of our own: librdkafka's can be ignored (bounded_calls)."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaException

from streamflow.runtime.bounded_calls import BoundedCalls


def test_results_and_errors_come_back_from_the_helper_thread() -> None:
    calls = BoundedCalls("t")
    try:
        assert calls.call(lambda a, b: a + b, 2, 3, limit=5, what="add") == 5
        with pytest.raises(ValueError, match="bad"):
            calls.call(lambda: (_ for _ in ()).throw(ValueError("bad")), limit=5, what="raise")
    finally:
        calls.close()


def test_a_call_that_never_returns_is_abandoned_as_a_fatal_error_and_the_next_gets_a_thread() -> (
    None
):
    calls = BoundedCalls("t")
    release = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(KafkaException) as info:
            calls.call(release.wait, limit=0.2, what="send_offsets_to_transaction")
        err = info.value.args[0]
        assert (
            err.fatal() and "send_offsets_to_transaction did not return within 0.2 s" in err.str()
        )
        assert time.monotonic() - started < 5
        assert calls.abandoned == 1
        assert calls.call(lambda: "next", limit=5, what="next") == "next"  # not queued behind it
    finally:
        release.set()
        calls.close()
