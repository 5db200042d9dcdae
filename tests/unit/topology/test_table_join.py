"""Table-table joins through the in-process driver: the joined table stays current as either
side changes, with tombstones when a row stops existing; co-partitioning is checked."""

from __future__ import annotations

import pytest

from streamflow import App, TopologyError
from streamflow.testing import TestDriver


def _app(how: str) -> App:
    app = App("crm")
    users, plans, out = app.topic("users"), app.topic("plans"), app.topic("joined")
    (app.table(users).join(app.table(plans), lambda u, p: {"user": u, "plan": p}, how=how).to(out))
    return app


def _replay(driver: TestDriver) -> None:
    driver.pipe("users", "a", "Ann")
    driver.pipe("plans", "b", "free")  # no user b yet
    driver.pipe("plans", "a", "pro")
    driver.pipe("users", "a", "Ann B.")  # an update of the left side
    driver.pipe("plans", "a", None)  # delete on the right
    driver.pipe("users", "a", None)  # delete on the left


def test_inner_join_follows_both_sides() -> None:
    with TestDriver(_app("inner")) as driver:
        _replay(driver)
        assert driver.read("joined") == [
            ("a", {"user": "Ann", "plan": "pro"}),
            ("a", {"user": "Ann B.", "plan": "pro"}),
            ("a", None),
            ("a", None),
        ]


def test_left_join_keeps_left_rows_without_a_match() -> None:
    with TestDriver(_app("left")) as driver:
        _replay(driver)
        assert driver.read("joined") == [
            ("a", {"user": "Ann", "plan": None}),
            ("a", {"user": "Ann", "plan": "pro"}),
            ("a", {"user": "Ann B.", "plan": "pro"}),
            ("a", {"user": "Ann B.", "plan": None}),
            ("a", None),
        ]


def test_outer_join_keeps_rows_of_either_side() -> None:
    with TestDriver(_app("outer")) as driver:
        _replay(driver)
        assert driver.read("joined") == [
            ("a", {"user": "Ann", "plan": None}),
            ("b", {"user": None, "plan": "free"}),
            ("a", {"user": "Ann", "plan": "pro"}),
            ("a", {"user": "Ann B.", "plan": "pro"}),
            ("a", {"user": "Ann B.", "plan": None}),
            ("a", None),
        ]


def test_the_last_joined_row_per_key_matches_a_recomputation() -> None:
    import random

    rng = random.Random(2)
    users: dict[str, str] = {}
    plans: dict[str, str] = {}
    with TestDriver(_app("outer"), partitions=3) as driver:
        for i in range(400):
            key = f"k{rng.randrange(20)}"
            table, side = ("users", users) if rng.random() < 0.5 else ("plans", plans)
            value = None if rng.random() < 0.2 else f"v{i}"
            if value is None:
                side.pop(key, None)
            else:
                side[key] = value
            driver.pipe(table, key, value)
        last: dict[str, object] = {}
        for key, row in driver.read("joined"):
            last[key] = row
    expected = {k: {"user": users.get(k), "plan": plans.get(k)} for k in set(users) | set(plans)}
    assert {k: v for k, v in last.items() if v is not None} == expected


def test_bad_how_is_refused() -> None:
    app = App("x")
    with pytest.raises(TopologyError, match="how='full'"):
        app.table(app.topic("a")).join(app.table(app.topic("b")), lambda a, b: a, how="full")
