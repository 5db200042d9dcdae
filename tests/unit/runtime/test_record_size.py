"""Records larger than the producer accepts fail the input record that made them, never the
commit (through the driver, which holds sends to the limit a worker's producer has); store
values larger than one record are written as chunks up to the payload limit."""

from __future__ import annotations

from streamflow import App
from streamflow.kafka.record_size import (
    ENVELOPE_BYTES,
    MESSAGE_MAX_BYTES,
    RECORD_HEADROOM,
    max_record_bytes,
)
from streamflow.operate.dead_letter_format import HEADER_ERROR
from streamflow.testing import TestDriver

LIMIT = MESSAGE_MAX_BYTES - RECORD_HEADROOM
CHUNK_OF_LOG = 100_000


def _reasons(driver: TestDriver) -> list[str]:
    return [dict(m.headers())[HEADER_ERROR].decode() for m in driver.dead_letters()]


def test_a_store_value_growing_past_one_record_is_chunked_and_past_the_payload_limit_fails() -> (
    None
):
    app = App("grows", kafka={"message.max.bytes": "300000"}, max_payload_bytes=600_000)
    app.topic("in")
    app.stream("in").aggregate("log", initial=lambda: "", fn=lambda acc, value: acc + value)
    with TestDriver(app) as driver:
        for _ in range(10):  # "big" passes one record at its 3rd chunk, the value limit later
            driver.pipe("in", "big", "x" * CHUNK_OF_LOG)
            driver.pipe("in", "small", "y")
        stored = driver.store("log")
        reasons = _reasons(driver)
        changelog = driver.messages("grows-log-changelog")
    value_limit = 600_000 + ENVELOPE_BYTES
    # The truth: the largest whole number of chunks whose JSON string still fits.
    fitting = max(n for n in range(11) if len(b"big") + n * CHUNK_OF_LOG + 2 <= value_limit)
    assert fitting > 2  # some values were written as chunks
    assert stored == {"big": "x" * CHUNK_OF_LOG * fitting, "small": "y" * 10}
    assert len(reasons) == 10 - fitting
    reason = reasons[0]
    assert "store 'log'" in reason and "'big'" in reason
    assert f"{3 + (fitting + 1) * CHUNK_OF_LOG + 2} bytes" in reason
    assert f"limit of {value_limit}" in reason
    assert all(len(m.key()) + len(m.value() or b"") <= 300_000 - RECORD_HEADROOM for m in changelog)


def test_a_sink_output_over_the_limit_dead_letters_its_record_and_the_others_go_out() -> None:
    app = App("big-out")
    app.topic("in")
    app.topic("out")
    app.stream("in").map(lambda n: "z" * n).to("out")
    with TestDriver(app) as driver:
        driver.pipe("in", "a", 10)
        driver.pipe("in", "b", LIMIT)  # the JSON quotes push it over
        driver.pipe("in", "c", 20)
        assert [k for k, _ in driver.read("out")] == ["a", "c"]
        (reason,) = _reasons(driver)
    assert "topic 'out'" in reason and f"{1 + LIMIT + 2} bytes" in reason
    assert f"limit of {LIMIT}" in reason and "message.max.bytes" in reason


def test_the_limit_follows_the_producers_message_max_bytes() -> None:
    app = App("small-limit", kafka={"message.max.bytes": "300000"})
    app.topic("in")
    app.topic("out")
    app.stream("in").map(lambda n: "v" * n).to("out")
    limit = 300_000 - RECORD_HEADROOM
    assert max_record_bytes({"message.max.bytes": "300000"}) == limit
    with TestDriver(app) as driver:
        assert driver.max_record_bytes == limit
        driver.pipe("in", "k", limit - 100)
        driver.pipe("in", "k", limit)
        assert [len(v) for _, v in driver.read("out")] == [limit - 100]
        (reason,) = _reasons(driver)
    assert f"limit of {limit}" in reason
