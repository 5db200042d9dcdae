"""Records larger than the producer accepts fail the input record that made them, never the
commit (through the driver, which holds sends to the limit a worker's producer has)."""

from __future__ import annotations

from streamflow import App
from streamflow.runtime.collector import MESSAGE_MAX_BYTES, RECORD_HEADROOM, max_record_bytes
from streamflow.runtime.dead_letter import HEADER_ERROR
from streamflow.testing import TestDriver

LIMIT = MESSAGE_MAX_BYTES - RECORD_HEADROOM
CHUNK = 200_000


def _reasons(driver: TestDriver) -> list[str]:
    return [dict(m.headers())[HEADER_ERROR].decode() for m in driver.dead_letters()]


def test_a_store_value_growing_past_the_record_limit_dead_letters_its_record_not_the_commit() -> (
    None
):
    app = App("grows")
    app.topic("in")
    app.stream("in").aggregate("log", initial=lambda: "", fn=lambda acc, value: acc + value)
    with TestDriver(app) as driver:
        for _ in range(6):  # "big" passes the limit at its 5th chunk; "small" never does
            driver.pipe("in", "big", "x" * CHUNK)
            driver.pipe("in", "small", "y")
        stored = driver.store("log")
        reasons = _reasons(driver)
    # The truth: the largest whole number of chunks whose JSON string still fits.
    fitting = max(n for n in range(7) if len(b"big") + n * CHUNK + 2 <= LIMIT)
    assert stored == {"big": "x" * CHUNK * fitting, "small": "y" * 6}
    assert len(reasons) == 6 - fitting
    reason = reasons[0]
    assert "store 'log'" in reason and "'big'" in reason
    assert f"{3 + (fitting + 1) * CHUNK + 2} bytes" in reason and f"limit of {LIMIT}" in reason


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
    app.stream("in").aggregate("last", initial=lambda: "", fn=lambda acc, value: value)
    limit = 300_000 - RECORD_HEADROOM
    assert max_record_bytes({"message.max.bytes": "300000"}) == limit
    with TestDriver(app) as driver:
        assert driver.max_record_bytes == limit
        driver.pipe("in", "k", "v" * (limit - 100))
        driver.pipe("in", "k", "w" * limit)
        assert driver.store("last") == {"k": "v" * (limit - 100)}
        (reason,) = _reasons(driver)
    assert f"limit of {limit}" in reason
