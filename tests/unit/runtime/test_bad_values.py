"""Values that cannot be stored, processors that raise anything, records too large for the
dead-letter topic: each record lands in the DLQ with its reason, the store stays as it was,
and processing goes on (through the driver: real tasks and RocksDB stores)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from streamflow import App
from streamflow.operate.dead_letter_format import (
    DEAD_LETTER_MAX_BYTES,
    HEADER_ERROR,
    HEADER_TRUNCATED,
    fit_dead_letter,
)
from streamflow.testing import TestDriver


def _reasons(driver: TestDriver) -> list[str]:
    return [dict(m.headers())[HEADER_ERROR].decode() for m in driver.dead_letters()]


@pytest.mark.parametrize(
    "bad", [{13: 5}, Decimal("1.5"), 2**70], ids=["int-key", "decimal", "big-int"]
)
def test_an_aggregate_that_cannot_be_serialized_dead_letters_its_record_only(bad) -> None:
    app = App("bad-agg")
    app.topic("in")

    def add(acc: dict, value: dict) -> object:
        return bad if value.get("poison") else {"n": acc["n"] + 1}

    app.stream("in").aggregate("counts", initial=lambda: {"n": 0}, fn=add)
    with TestDriver(app) as driver:
        driver.pipe("in", "k", {})
        driver.pipe("in", "k", {"poison": True})
        driver.pipe("in", "k", {})
        assert driver.store("counts") == {"k": {"n": 2}}
        (reason,) = _reasons(driver)
    assert "store 'counts'" in reason and "cannot be serialized" in reason


def test_an_aggregate_that_mutates_its_accumulator_and_raises_leaves_the_store_as_it_was() -> None:
    app = App("mutate-raise")
    app.topic("in")

    def add(acc: dict, value: dict) -> dict:
        acc["n"] += value["by"]
        acc.setdefault("seen", []).append(value["by"])
        if value["by"] < 0:
            raise ValueError("negative")
        return acc

    app.stream("in").aggregate("totals", initial=lambda: {"n": 0}, fn=add)
    with TestDriver(app) as driver:
        driver.pipe("in", "k", {"by": 5})  # committed before the poison
        driver.pipe("in", "k", {"by": -100})  # mutates the committed value, then raises
        assert driver.store("totals") == {"k": {"n": 5, "seen": [5]}}
        driver.pipe("in", "k", {"by": 1})
        assert driver.store("totals") == {"k": {"n": 6, "seen": [5, 1]}}
        assert len(driver.dead_letters()) == 1


def test_mutation_then_raise_within_one_cycle_does_not_reach_the_commit() -> None:
    """Both records go through one cycle (one pipe each, but the second raises after mutating
    the value the first one wrote in the same store)."""
    app = App("same-cycle")
    app.topic("in")
    store = app.store("s")

    def proc(record, ctx) -> None:
        value = ctx.store("s").get("k") or {"items": []}
        value["items"].append(record.value["item"])
        if record.value["item"] == "bad":
            raise KeyError("bad")
        ctx.store("s").put("k", value)

    app.stream("in").process(proc, stores=[store.name])
    with TestDriver(app) as driver:
        for item in ("a", "bad", "b"):
            driver.pipe("in", "k", {"item": item})
        assert driver.store("s") == {"k": {"items": ["a", "b"]}}


@pytest.mark.parametrize(
    "raised",
    [ValueError("v"), KeyError("k"), RecursionError("deep"), SystemExit(3)],
    ids=lambda e: type(e).__name__,
)
def test_a_processor_raising_anything_but_an_interrupt_dead_letters_and_goes_on(raised) -> None:
    app = App("raises")
    app.topic("in")
    app.topic("out")

    def boom(value: dict) -> dict:
        if value.get("poison"):
            raise raised
        return value

    app.stream("in").map(boom).to("out")
    with TestDriver(app) as driver:
        driver.pipe("in", "a", {"n": 1})
        driver.pipe("in", "b", {"poison": True})
        driver.pipe("in", "c", {"n": 3})
        assert [k for k, _ in driver.read("out")] == ["a", "c"]
        (reason,) = _reasons(driver)
    assert type(raised).__name__ in reason


def test_a_poison_record_too_large_for_the_dead_letter_topic_is_cut_with_a_header() -> None:
    key, value = b"k" * 10, b"v" * (DEAD_LETTER_MAX_BYTES + 50_000)
    headers = [
        (HEADER_ERROR, b"ValueError: too big"),
        ("streamflow.error.trace", b"t" * 9000),
        ("user-header", b"u" * 100_000),
    ]
    k, v, h = fit_dead_letter(key, value, headers)
    size = len(k or b"") + len(v or b"") + sum(len(a) + len(b) + 16 for a, b in h)
    assert size <= DEAD_LETTER_MAX_BYTES
    assert dict(h)[HEADER_TRUNCATED] == f"10,{len(value)}".encode()
    assert dict(h)[HEADER_ERROR] == b"ValueError: too big" and k == key
    assert v == value[: len(v)] and len(v) > DEAD_LETTER_MAX_BYTES - 20_000
    assert fit_dead_letter(b"k", b"small", headers[:1]) == (b"k", b"small", headers[:1])


def test_a_failed_record_leaves_every_store_as_it_was_before_it() -> None:
    """Writes made before the raise are rolled back too, in every store, newest first: the
    record goes to the DLQ whole, not half applied."""
    app = App("rollback")
    app.topic("in")
    app.store("a")
    app.store("b")

    def proc(record, ctx) -> None:
        ctx.store("a").put(record.key, record.value["n"])
        ctx.store("a").put(record.key, record.value["n"] * 10)  # the same key twice
        ctx.store("b").put(record.key, "seen")
        if record.value.get("poison"):
            raise ValueError("after three writes")

    app.stream("in").process(proc, stores=["a", "b"])
    with TestDriver(app) as driver:
        driver.pipe("in", "k", {"n": 1})
        driver.pipe("in", "k", {"n": 2, "poison": True})
        driver.pipe("in", "j", {"n": 3, "poison": True})
        assert driver.store("a") == {"k": 10} and driver.store("b") == {"k": "seen"}
        assert len(driver.dead_letters()) == 2


def test_a_failed_record_keeps_what_earlier_records_of_its_cycle_wrote() -> None:
    """One input fans out through a repartition topic: the driver processes the three records
    it causes in one cycle, and only the failing one's writes are undone."""
    app = App("rollback-cycle")
    app.topic("in")
    app.store("counts")

    def count(record, ctx) -> None:
        store = ctx.store("counts")
        store.put(record.key, (store.get(record.key) or 0) + 1)
        if record.value == "bad":
            raise ValueError("bad item")

    (
        app.stream("in")
        .flat_map(lambda value: value["items"])
        .key_by(lambda value: "all", name="by-all")
        .process(count, stores=["counts"])
    )
    with TestDriver(app) as driver:
        driver.pipe("in", "k", {"items": ["x", "bad", "y"]})
        assert driver.store("counts") == {"all": 2}
        assert len(driver.dead_letters()) == 1
