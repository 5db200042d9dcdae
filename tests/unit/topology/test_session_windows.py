"""Session windows through the in-process driver, against sessions worked out by hand and
against an offline sessionization of shuffled input."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from streamflow import App, ConfigError, Windowed, session
from streamflow.serde.base import STR
from streamflow.testing import TestDriver
from streamflow.topology.windows import SessionWindows, windowed_serde

MIN = 60_000
T0 = 1_700_000_000_000


def _app(windows: SessionWindows, emit: str) -> App:
    app = App("visits")
    views = app.topic("views")
    out = app.topic("sessions", key=windowed_serde(STR))
    app.stream(views).window(windows).count("per-session", emit=emit).to(out)
    return app


def _at(*minutes: int) -> list[int]:
    return [T0 + m * MIN for m in minutes]


def test_records_within_the_gap_form_one_session_closed_after_gap_and_grace() -> None:
    with TestDriver(_app(session(5 * MIN), "close")) as driver:
        for ts in _at(0, 2, 6):
            driver.pipe("views", "u", {}, timestamp=ts)
        assert driver.read("sessions") == []  # [0, 6] is open until 6 + 5
        driver.pipe("views", "v", {}, timestamp=T0 + 11 * MIN)  # stream time 11: closes it
        assert driver.read("sessions") == [(Windowed("u", T0, T0 + 6 * MIN), 3)]


def test_a_record_in_the_gap_joins_two_sessions_with_tombstones_for_the_old_ones() -> None:
    with TestDriver(_app(session(5 * MIN, grace=30 * MIN), "update")) as driver:
        for ts in _at(0, 8, 4):
            driver.pipe("views", "u", {}, timestamp=ts)
        assert driver.read("sessions") == [
            (Windowed("u", T0, T0), 1),
            (Windowed("u", T0 + 8 * MIN, T0 + 8 * MIN), 1),
            (Windowed("u", T0, T0), None),
            (Windowed("u", T0 + 8 * MIN, T0 + 8 * MIN), None),
            (Windowed("u", T0, T0 + 8 * MIN), 3),
        ]
        assert len(driver.store("per-session")) == 1


def test_a_record_for_a_closed_session_is_late() -> None:
    with TestDriver(_app(session(5 * MIN), "close")) as driver:
        driver.pipe("views", "u", {}, timestamp=T0)
        driver.pipe("views", "u", {}, timestamp=T0 + 20 * MIN)  # closes [0, 0]
        driver.pipe("views", "u", {}, timestamp=T0 + 1 * MIN)  # its session has closed
        assert [w for w, _ in driver.read("sessions")] == [Windowed("u", T0, T0)]
        (dead,) = driver.dead_letters()
        assert b"a session around" in b" ".join(dict(dead.headers() or []).values())


def test_aggregate_over_sessions_needs_a_merge() -> None:
    app = App("x")
    stream = app.stream(app.topic("t")).window(session(MIN))
    with pytest.raises(ConfigError, match="needs merge=fn"):
        stream.aggregate("s", initial=list, fn=lambda acc, v: [*acc, v])


def test_counts_equal_an_offline_sessionization_of_shuffled_input() -> None:
    rng = random.Random(11)
    gap = 3 * MIN
    times: dict[str, list[int]] = defaultdict(list)
    events = []
    for _ in range(300):
        key = f"u{rng.randrange(6)}"
        ts = T0 + rng.randrange(0, 120) * 30_000
        events.append((key, ts))
        times[key].append(ts)
    truth: dict[Windowed, int] = {}
    for key, ts_list in times.items():
        ts_list.sort()
        start = prev = ts_list[0]
        n = 0
        for ts in ts_list:
            if ts - prev > gap:
                truth[Windowed(key, start, prev)] = n
                start, n = ts, 0
            prev = ts
            n += 1
        truth[Windowed(key, start, prev)] = n
    rng.shuffle(events)
    with TestDriver(_app(session(gap, grace=120 * MIN), "close"), partitions=2) as driver:
        for key, ts in events:
            driver.pipe("views", key, {}, timestamp=ts)
        for key in times:  # far ahead on every partition: closes every session
            driver.pipe("views", key, {}, timestamp=T0 + 1000 * MIN)
        result = {w: n for w, n in driver.read("sessions") if w.start < T0 + 999 * MIN}
    assert result == truth
