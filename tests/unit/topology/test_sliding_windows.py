"""Sliding windows through the in-process driver: windows worked out by hand, late records, the
record buffer emptying as windows close, and an offline computation over shuffled input."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from streamflow import App, ConfigError, Windowed, sliding
from streamflow.serde.base import STR
from streamflow.testing import TestDriver
from streamflow.topology.windows import SlidingWindows, windowed_serde

S = 1_000
T0 = 1_700_000_000_000


def _app(windows: SlidingWindows, emit: str, *, summing: bool = False) -> App:
    app = App("clicks")
    clicks = app.topic("clicks")
    out = app.topic("out", key=windowed_serde(STR))
    win = app.stream(clicks).window(windows)
    if summing:
        win.aggregate("sums", initial=int, fn=lambda acc, v: acc + v["n"], emit=emit).to(out)
    else:
        win.count("per-window", emit=emit).to(out)
    return app


def _offline(events: list[tuple[str, int]], size: int) -> dict[Windowed, int]:
    """Every window sliding semantics define, with its count: each record ends one window and
    starts the one after it when that one holds a record."""
    times: dict[str, list[int]] = defaultdict(list)
    for key, ts in events:
        times[key].append(ts)
    truth = {}
    for key, ts_list in times.items():
        for t in ts_list:
            for start in (t - size + 1, t + 1):
                count = sum(1 for u in ts_list if start <= u < start + size)
                if count:
                    truth[Windowed(key, start, start + size)] = count
    return truth


def test_each_record_ends_a_window_and_the_one_after_it_holds_what_follows() -> None:
    with TestDriver(_app(sliding(10 * S), "update")) as driver:
        driver.pipe("clicks", "u", {}, timestamp=T0)
        driver.pipe("clicks", "u", {}, timestamp=T0 + 4 * S)
        assert driver.read("out") == [
            (Windowed("u", T0 - 10 * S + 1, T0 + 1), 1),  # ends at the first record
            (Windowed("u", T0 - 6 * S + 1, T0 + 4 * S + 1), 2),  # both
            (Windowed("u", T0 + 1, T0 + 10 * S + 1), 1),  # after the first: the second only
        ]


def test_an_out_of_order_record_opens_the_window_of_the_records_after_it() -> None:
    with TestDriver(_app(sliding(10 * S, grace=60 * S), "update")) as driver:
        driver.pipe("clicks", "u", {}, timestamp=T0 + 8 * S)
        driver.pipe("clicks", "u", {}, timestamp=T0)  # earlier: its windows reach the first
        out = driver.read("out")
        assert out == [
            (Windowed("u", T0 - 2 * S + 1, T0 + 8 * S + 1), 1),
            (Windowed("u", T0 - 10 * S + 1, T0 + 1), 1),
            (Windowed("u", T0 - 2 * S + 1, T0 + 8 * S + 1), 2),  # the later record's window
            (Windowed("u", T0 + 1, T0 + 10 * S + 1), 1),  # after the early one: the later one
        ]


def test_windows_close_after_grace_emit_once_and_the_buffer_empties() -> None:
    times = [T0, T0 + 3 * S, T0 + 5 * S]
    with TestDriver(_app(sliding(10 * S, grace=2 * S), "close")) as driver:
        for ts in times:
            driver.pipe("clicks", "u", {}, timestamp=ts)
        # The window ending at the first record closed at its end + grace: T0 + 1 ms + 2 s.
        assert driver.read("out") == [(Windowed("u", T0 - 10 * S + 1, T0 + 1), 1)]
        driver.pipe("clicks", "z", {}, timestamp=T0 + 100 * S)  # closes every window of u
        emitted = [w for w, _ in driver.read("out") if w.key == "u"]
        assert Counter(emitted) == Counter(set(_offline([("u", t) for t in times], 10 * S)))
        assert len(emitted) == 5  # three windows ending at a record, two after one: each once
        # u's records are gone from the buffer and its index; z's stays (its windows are open).
        assert len(driver.store("per-window-records")) == 1
        assert len(driver.store("per-window-records-by-time")) == 1


def test_a_record_no_open_window_can_hold_is_late_and_counts_nowhere() -> None:
    with TestDriver(_app(sliding(10 * S), "close")) as driver:
        driver.pipe("clicks", "u", {}, timestamp=T0 + 60 * S)
        driver.pipe("clicks", "u", {}, timestamp=T0)  # [T0, T0 + 10 s) closed at T0 + 10 s
        (dead,) = driver.dead_letters()
        assert b"sliding window" in b" ".join(dict(dead.headers() or []).values())
        driver.pipe("clicks", "z", {}, timestamp=T0 + 200 * S)
        assert [(w, n) for w, n in driver.read("out") if w.key == "u"] == [
            (Windowed("u", T0 + 50 * S + 1, T0 + 60 * S + 1), 1)
        ]


def test_counts_and_sums_equal_an_offline_computation_of_shuffled_input() -> None:
    rng = random.Random(7)
    size = 20 * S
    events = [(f"u{rng.randrange(5)}", T0 + rng.randrange(0, 400) * 500) for _ in range(400)]
    order = list(range(len(events)))
    rng.shuffle(order)
    with TestDriver(_app(sliding(size, grace=1_000 * S), "update")) as driver:
        for i in order:
            key, ts = events[i]
            driver.pipe("clicks", key, {"n": i}, timestamp=ts)
        latest = dict(driver.read("out"))
    assert latest == _offline(events, size)
    assert not driver.dead_letters()


def test_sums_fold_new_windows_from_the_buffered_records() -> None:
    events = [("u", T0 + 9 * S, 5), ("u", T0 + 2 * S, 7), ("u", T0 + 5 * S, 100)]
    with TestDriver(_app(sliding(10 * S, grace=60 * S), "update", summing=True)) as driver:
        for key, ts, n in events:
            driver.pipe("clicks", key, {"n": n}, timestamp=ts)
        latest = dict(driver.read("out"))
    assert latest == {
        Windowed("u", T0 - 1 * S + 1, T0 + 9 * S + 1): 112,  # ends at 9 s: all three
        Windowed("u", T0 - 8 * S + 1, T0 + 2 * S + 1): 7,
        Windowed("u", T0 - 5 * S + 1, T0 + 5 * S + 1): 107,
        Windowed("u", T0 + 2 * S + 1, T0 + 12 * S + 1): 105,  # after 2 s: 5 s and 9 s
        Windowed("u", T0 + 5 * S + 1, T0 + 15 * S + 1): 5,  # after 5 s: 9 s
    }


def test_bad_sliding_windows_are_refused() -> None:
    with pytest.raises(ConfigError, match="sliding window's size must be positive"):
        sliding(0)
    with pytest.raises(ConfigError, match="grace must not be negative"):
        sliding(10, grace=-1)
