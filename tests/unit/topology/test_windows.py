"""Windowed aggregations through the in-process driver, against answers worked out by hand:
tumbling and hopping windows, emit on update and on close, grace, late records, quiet
partitions, event time from a field, and stream time surviving a restart."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streamflow import App, ConfigError, Windowed, hopping, tumbling
from streamflow.operate.dead_letter_format import HEADER_PROCESSOR, HEADER_STAGE
from streamflow.serde.base import STR
from streamflow.testing import TestDriver
from streamflow.topology.windows import TimeWindows, windowed_serde

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (10 * MIN)  # aligned to every window size used


def _app(windows: TimeWindows, *, emit: str = "update", **options: Any) -> App:
    app = App("clicks")
    clicks = app.topic("clicks")
    counts = app.topic("counts", key=windowed_serde(STR))
    app.stream(clicks).window(windows, **options).count("per-window", emit=emit).to(counts)
    return app


def _header(msg: Any, name: str) -> str:
    return dict(msg.headers() or [])[name].decode()


def test_window_starts_cover_exactly_the_windows_that_contain_a_time() -> None:
    assert list(tumbling(10).starts(25)) == [20]
    assert list(tumbling(10).starts(-5)) == [-10]
    assert list(hopping(10, 5).starts(12)) == [5, 10]
    assert list(hopping(10, 5).starts(10)) == [5, 10]
    assert list(hopping(10, 3).starts(12)) == [3, 6, 9, 12]
    for ts in range(-40, 40):
        for w in (hopping(10, 3), hopping(10, 5), tumbling(7)):
            assert all(s <= ts < s + w.size_ms for s in w.starts(ts))
            assert len(w.starts(ts)) == sum(
                1 for s in range(-100, 100) if s % w.advance_ms == 0 and s <= ts < s + w.size_ms
            )


def test_bad_window_definitions_are_refused_naming_the_problem() -> None:
    with pytest.raises(ConfigError, match="size must be positive"):
        tumbling(0)
    with pytest.raises(ConfigError, match="advance by more than 0 and at most its size"):
        hopping(timedelta(minutes=1), timedelta(minutes=2))
    with pytest.raises(ConfigError, match="late='later'"):
        app = App("x")
        app.stream(app.topic("t")).window(tumbling(10), late="later")


def test_tumbling_count_emits_every_update_with_the_window_in_the_key() -> None:
    events = [("a", 0), ("a", 1), ("b", 2), ("a", 5), ("a", 6), ("b", 9), ("a", 11)]
    with TestDriver(_app(tumbling(timedelta(minutes=5)))) as driver:
        for user, minute in events:
            driver.pipe("clicks", user, {"page": "/"}, timestamp=T0 + minute * MIN)
        out = driver.read("counts")
    w = lambda k, m: Windowed(k, T0 + m * MIN, T0 + (m + 5) * MIN)  # noqa: E731
    assert out == [
        (w("a", 0), 1),
        (w("a", 0), 2),
        (w("b", 0), 1),
        (w("a", 5), 1),
        (w("a", 5), 2),
        (w("b", 5), 1),
        (w("a", 10), 1),
    ]


def test_hopping_windows_emitted_on_close_once_each_and_then_deleted() -> None:
    # 10-minute windows every 5 minutes, 1 minute of grace.
    app = _app(hopping(10 * MIN, 5 * MIN, grace=MIN), emit="close")
    with TestDriver(app) as driver:
        driver.pipe("clicks", "a", {}, timestamp=T0 + 1 * MIN)
        driver.pipe("clicks", "a", {}, timestamp=T0 + 3 * MIN)
        # In [-5,5) and [0,10); stream time 3 closes nothing (the first closes at 5 + 1).
        assert driver.read("counts") == []
        driver.pipe("clicks", "a", {}, timestamp=T0 + 7 * MIN)  # closes [-5,5)
        assert driver.read("counts") == [(Windowed("a", T0 - 5 * MIN, T0 + 5 * MIN), 2)]
        driver.pipe("clicks", "a", {}, timestamp=T0 + 12 * MIN)  # closes [0,10): 10 + 1 <= 12
        driver.pipe("clicks", "b", {}, timestamp=T0 + 16 * MIN)  # closes [5,15): 15 + 1 <= 16
        assert driver.read("counts")[1:] == [
            (Windowed("a", T0, T0 + 10 * MIN), 3),
            (Windowed("a", T0 + 5 * MIN, T0 + 15 * MIN), 2),
        ]
        # Open: [10,20) with a@12 and b@16, [15,25) with b@16.
        assert len(driver.store("per-window")) == 3
        driver.pipe("clicks", "c", {}, timestamp=T0 + 40 * MIN)
        closed = {(k.key, (k.start - T0) // MIN): n for k, n in driver.read("counts")[3:]}
        assert closed == {("a", 10): 1, ("b", 10): 1, ("b", 15): 1}
        assert {w.key for w in map(_window_of, driver.store("per-window"))} == {"c"}


def _window_of(encoded: bytes) -> Windowed:
    from streamflow.topology.windows import store_start

    return Windowed(encoded[8:].decode(), store_start(encoded), 0)


def test_out_of_order_within_grace_counts_and_later_goes_to_the_dead_letter_topic() -> None:
    app = _app(tumbling(5 * MIN, grace=2 * MIN))
    with TestDriver(app) as driver:
        driver.pipe("clicks", "a", {"n": 1}, timestamp=T0 + 1 * MIN)
        driver.pipe("clicks", "a", {"n": 2}, timestamp=T0 + 6 * MIN)  # stream time 6
        driver.pipe("clicks", "a", {"n": 3}, timestamp=T0 + 4 * MIN)  # [0,5) open until 7
        driver.pipe("clicks", "a", {"n": 4}, timestamp=T0 + 8 * MIN)  # stream time 8: closes it
        driver.pipe("clicks", "a", {"n": 5}, timestamp=T0 + 2 * MIN)  # late
        assert driver.read("counts") == [
            (Windowed("a", T0, T0 + 5 * MIN), 1),
            (Windowed("a", T0 + 5 * MIN, T0 + 10 * MIN), 1),
            (Windowed("a", T0, T0 + 5 * MIN), 2),
            (Windowed("a", T0 + 5 * MIN, T0 + 10 * MIN), 2),
        ]
        (dead,) = driver.dead_letters()
        assert dead.value() == b'{"n":5}'
        assert _header(dead, HEADER_STAGE) == "window"
        assert _header(dead, HEADER_PROCESSOR) == "per-window"
        reason = dict(dead.headers() or [])
        text = b" ".join(reason.values()).decode()
        assert "late record for key 'a'" in text and "grace 120000 ms" in text


def test_late_drop_counts_and_drops_instead() -> None:
    with TestDriver(_app(tumbling(5 * MIN), late="drop")) as driver:
        driver.pipe("clicks", "a", {}, timestamp=T0 + 6 * MIN)
        driver.pipe("clicks", "a", {}, timestamp=T0 + 1 * MIN)
        assert driver.dead_letters() == []
        assert driver.read("counts") == [(Windowed("a", T0 + 5 * MIN, T0 + 10 * MIN), 1)]


def test_a_quiet_partition_closes_its_windows_on_the_wall_clock() -> None:
    app = _app(tumbling(5 * MIN, grace=MIN), emit="close", idle_close=timedelta(seconds=30))
    with TestDriver(app, start_time_ms=T0) as driver:
        driver.pipe("clicks", "a", {}, timestamp=T0 + 1 * MIN)
        driver.pipe("clicks", "a", {}, timestamp=T0 + 2 * MIN)
        driver.advance_time(20_000)  # quiet for 20 s: not yet idle
        assert driver.read("counts") == []
        driver.advance_time(60_000)  # idle; stream time 2 min + 80 s: window ends at 5+1
        assert driver.read("counts") == []
        driver.advance_time(4 * MIN)  # stream time 2 + 80 s + 4 min > 6 min: closes
        assert driver.read("counts") == [(Windowed("a", T0, T0 + 5 * MIN), 2)]
        # A record of the closed window is late now, never a second result for it.
        driver.pipe("clicks", "a", {}, timestamp=T0 + 3 * MIN)
        assert len(driver.dead_letters()) == 1 and len(driver.read("counts")) == 1


def test_event_time_from_a_field_and_a_bad_one_goes_to_the_dead_letter_topic() -> None:
    app = App("views")
    views, out = app.topic("views"), app.topic("out", key=windowed_serde(STR))
    (
        app.stream(views, timestamp="at")
        .window(tumbling(MIN))
        .aggregate("pages", initial=list, fn=lambda acc, v: [*acc, v["page"]])
        .to(out)
    )
    aware = datetime.fromtimestamp((T0 + 90_000) / 1000, UTC)
    with TestDriver(app) as driver:
        driver.pipe("views", "u", {"page": "/a", "at": T0 + 10}, timestamp=T0 + 99 * MIN)
        driver.pipe("views", "u", {"page": "/b", "at": T0 + 20}, timestamp=T0)
        driver.pipe("views", "u", {"page": "/c", "missing": 1})
        assert driver.read("out") == [
            (Windowed("u", T0, T0 + MIN), ["/a"]),
            (Windowed("u", T0, T0 + MIN), ["/a", "/b"]),
        ]
        assert [m.timestamp()[1] for m in driver.messages("out")] == [T0 + 10, T0 + 20]
        (dead,) = driver.dead_letters()
        assert b"/c" in (dead.value() or b"")
    assert aware.tzinfo is not None


def test_stream_time_survives_a_restart_so_late_is_decided_as_before(tmp_path: Path) -> None:
    def run(events: list[tuple[str, int]]) -> tuple[list[Any], int]:
        with TestDriver(_app(tumbling(5 * MIN)), state_dir=tmp_path) as driver:
            for user, minute in events:
                driver.pipe("clicks", user, {}, timestamp=T0 + minute * MIN)
            return driver.read("counts"), len(driver.dead_letters())

    first, dead = run([("a", 1), ("a", 12)])
    assert dead == 0 and len(first) == 2
    again, dead = run([("a", 3)])  # [0,5) closed at stream time 12 before the restart
    assert again == [] and dead == 1
    later, dead = run([("a", 13)])  # its window [10,15) is still there: counted on
    assert later == [(Windowed("a", T0 + 10 * MIN, T0 + 15 * MIN), 2)] and dead == 0


def test_counts_match_a_plain_python_recount_over_shuffled_input() -> None:
    import random

    rng = random.Random(7)
    events = [(f"k{rng.randrange(5)}", T0 + rng.randrange(60) * 1000) for _ in range(400)]
    windows = hopping(20_000, 5_000, grace=60_000)  # grace covers all disorder: none late
    truth: dict[Windowed, int] = defaultdict(int)
    for key, ts in events:
        for start in windows.starts(ts):
            truth[Windowed(key, start, start + 20_000)] += 1
    with TestDriver(_app(windows, emit="close"), partitions=3) as driver:
        for key, ts in events:
            driver.pipe("clicks", key, {}, timestamp=ts)
        for key in {k for k, _ in events}:  # push stream time past every close, per partition
            driver.pipe("clicks", key, {}, timestamp=T0 + 10 * MIN)
        final = {k: n for k, n in driver.read("counts") if k.start < T0 + 5 * MIN}
    assert final == dict(truth)
