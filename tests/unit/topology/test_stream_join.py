"""Stream-stream joins within a time window, through the in-process driver: pairs worked out
by hand, left and outer rows for records that joined nothing, late records, an offline
recount over shuffled input, and the co-partitioning check."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from streamflow import App, TopologyError
from streamflow.cluster.topics import plan_topics
from streamflow.testing import TestDriver

MIN = 60_000
T0 = 1_700_000_000_000


def _app(how: str, within: int = 5, grace: int = 0) -> App:
    app = App("shop")
    clicks, buys, out = app.topic("clicks"), app.topic("buys"), app.topic("joined")
    (
        app.stream(clicks)
        .join_stream(
            app.stream(buys),
            lambda c, b: [c, b],
            within=timedelta(minutes=within),
            grace=timedelta(minutes=grace),
            how=how,
        )
        .to(out)
    )
    return app


def test_inner_join_pairs_records_at_most_within_apart() -> None:
    with TestDriver(_app("inner")) as driver:
        driver.pipe("clicks", "a", "c0", timestamp=T0)
        driver.pipe("buys", "a", "b3", timestamp=T0 + 3 * MIN)
        driver.pipe("buys", "a", "b10", timestamp=T0 + 10 * MIN)
        driver.pipe("clicks", "a", "c8", timestamp=T0 + 8 * MIN)
        driver.pipe("clicks", "z", "c9", timestamp=T0 + 9 * MIN)  # another key: nothing
        assert driver.read("joined") == [
            ("a", ["c0", "b3"]),
            ("a", ["c8", "b3"]),
            ("a", ["c8", "b10"]),
        ]
        stamps = [m.timestamp()[1] for m in driver.messages("joined")]
        assert stamps == [T0 + 3 * MIN, T0 + 8 * MIN, T0 + 10 * MIN]  # the later of the two


def test_left_join_emits_an_unjoined_record_once_it_can_no_longer_join() -> None:
    with TestDriver(_app("left", within=5, grace=1)) as driver:
        driver.pipe("clicks", "a", "c0", timestamp=T0)
        # A buy of a at 5 may still arrive (less than within + grace behind stream time 10)
        # and join c0: c0 stays buffered until stream time reaches 0 + 2 * 5 + 1.
        driver.pipe("buys", "x", "bx", timestamp=T0 + 10 * MIN)
        assert driver.read("joined") == []
        driver.pipe("buys", "a", "b5", timestamp=T0 + 5 * MIN)
        assert driver.read("joined") == [("a", ["c0", "b5"])]
        driver.pipe("clicks", "b", "c5", timestamp=T0 + 5 * MIN)  # not late: 5 + 5 + 1 > 10
        driver.pipe("buys", "x", "by", timestamp=T0 + 17 * MIN)  # 5 + 11 <= 17: c5 expires
        assert driver.read("joined")[1:] == [("b", ["c5", None])]  # c0 joined: not again


def test_outer_join_emits_unjoined_records_of_both_sides_and_not_joined_ones() -> None:
    with TestDriver(_app("outer")) as driver:
        driver.pipe("clicks", "a", "c0", timestamp=T0)
        driver.pipe("buys", "a", "b1", timestamp=T0 + 1 * MIN)
        driver.pipe("buys", "b", "b2", timestamp=T0 + 2 * MIN)
        driver.pipe("clicks", "q", "late-enough", timestamp=T0 + 30 * MIN)
        rows = driver.read("joined")
        assert rows[0] == ("a", ["c0", "b1"])
        assert sorted(map(str, rows[1:])) == [str(("b", [None, "b2"]))]


def test_a_record_that_can_no_longer_join_is_late() -> None:
    with TestDriver(_app("inner", within=1)) as driver:
        driver.pipe("clicks", "a", "c10", timestamp=T0 + 10 * MIN)
        driver.pipe("buys", "a", "b0", timestamp=T0)
        assert driver.read("joined") == []
        (dead,) = driver.dead_letters()
        assert b"can join records up to" in b" ".join(dict(dead.headers() or []).values())


def test_pairs_match_an_offline_join_of_shuffled_input() -> None:
    rng = random.Random(4)
    within = 2 * MIN
    clicks = [(f"k{rng.randrange(8)}", T0 + rng.randrange(0, 60) * 10_000) for _ in range(150)]
    buys = [(f"k{rng.randrange(8)}", T0 + rng.randrange(0, 60) * 10_000) for _ in range(150)]
    truth = Counter(
        (ck, i, j)
        for i, (ck, ct) in enumerate(clicks)
        for j, (bk, bt) in enumerate(buys)
        if ck == bk and abs(ct - bt) <= within
    )
    records = [("clicks", k, i, t) for i, (k, t) in enumerate(clicks)]
    records += [("buys", k, j, t) for j, (k, t) in enumerate(buys)]
    rng.shuffle(records)
    with TestDriver(_app("inner", within=2, grace=30), partitions=2) as driver:
        for topic, key, n, ts in records:
            driver.pipe(topic, key, n, timestamp=ts)
        got = Counter((k, c, b) for k, (c, b) in driver.read("joined"))
        assert driver.dead_letters() == []
    assert got == truth


def test_streams_of_different_partition_counts_are_refused_naming_both() -> None:
    app = App("shop")
    clicks, buys = app.topic("clicks", partitions=4), app.topic("buys", partitions=6)
    app.stream(clicks).join_stream(app.stream(buys), lambda a, b: a, within=timedelta(1))
    with pytest.raises(TopologyError, match=r"not co-partitioned.*clicks.*buys.*key_by"):
        plan_topics(app.topology, {}, app.dead_letter_topic)
