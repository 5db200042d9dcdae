"""Windowed results as tables: materialized with ``to_table``, read per key and time range with
``fetch_windows``, joined after re-keying by the window's key."""

from __future__ import annotations

from streamflow import App, Windowed, tumbling
from streamflow.serde.base import STR
from streamflow.testing import TestDriver
from streamflow.topology.windows import fetch_windows

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (10 * MIN)


def test_a_windowed_count_as_a_table_holds_the_latest_count_of_each_window() -> None:
    app = App("clicks")
    clicks = app.topic("clicks")
    app.stream(clicks).window(tumbling(5 * MIN)).count("per-window").to_table("counts")
    with TestDriver(app) as driver:
        for user, minute in [("u1", 0), ("u1", 1), ("u10", 2), ("u1", 6), ("u1", 12)]:
            driver.pipe("clicks", user, {}, timestamp=T0 + minute * MIN)
        assert driver.store("counts") == {
            Windowed("u1", T0, T0 + 5 * MIN): 2,
            Windowed("u10", T0, T0 + 5 * MIN): 1,
            Windowed("u1", T0 + 5 * MIN, T0 + 10 * MIN): 1,
            Windowed("u1", T0 + 10 * MIN, T0 + 15 * MIN): 1,
        }
        table = driver.store_of("counts", 0)
        # u1's windows only (not u10's, whose bytes start with u1's), by start time.
        assert fetch_windows(table, "u1") == [
            (Windowed("u1", T0, T0 + 5 * MIN), 2),
            (Windowed("u1", T0 + 5 * MIN, T0 + 10 * MIN), 1),
            (Windowed("u1", T0 + 10 * MIN, T0 + 15 * MIN), 1),
        ]
        assert fetch_windows(table, "u1", T0 + 5 * MIN, T0 + 9 * MIN) == [
            (Windowed("u1", T0 + 5 * MIN, T0 + 10 * MIN), 1)
        ]
        assert fetch_windows(table, "nobody") == []


def test_windowed_results_re_keyed_by_their_key_join_a_table() -> None:
    app = App("ads")
    clicks, campaigns = app.topic("clicks"), app.topic("campaigns")
    out = app.topic("report")
    names = app.table(campaigns)
    (
        app.stream(clicks)
        .window(tumbling(5 * MIN))
        .count("per-campaign", emit="close")
        .map(lambda w, n: {"campaign": w.key, "start": w.start, "clicks": n}, with_key=True)
        .key_by(lambda w, row: w.key, with_key=True, key=STR, name="by-campaign")
        .join(names, lambda row, campaign: {**row, "name": campaign["name"]})
        .to(out)
    )
    with TestDriver(app) as driver:
        driver.pipe("campaigns", "c1", {"name": "Winter sale"})
        for minute in (0, 1, 3):
            driver.pipe("clicks", "c1", {}, timestamp=T0 + minute * MIN)
        driver.pipe("clicks", "c2", {}, timestamp=T0 + 6 * MIN)  # closes [0, 5)
        assert driver.read("report") == [
            ("c1", {"campaign": "c1", "start": T0, "clicks": 3, "name": "Winter sale"})
        ]
