"""The clickstream example (``topologies/clickstream.py``) through the in-process driver, against
sessions and windowed conversions computed offline from the same page views."""

from __future__ import annotations

import importlib.util
import random
from collections import Counter
from pathlib import Path
from typing import Any

from streamflow import Windowed
from streamflow.testing import TestDriver
from streamflow.topology.windows import hopping

REPO = Path(__file__).resolve().parents[3]
MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MIN)
CAMPAIGNS = {"spring": ("Spring sale", 50_000), "brand": ("Brand", 20_000)}


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("clickstream", REPO / "topologies/clickstream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _views(seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Users visit in bursts (a few views a minute apart, then an hour or more away), each
    brought by one campaign (or none, or one missing from the table); some bursts check out."""
    rng = random.Random(seed)
    views = []
    for u in range(40):
        user, campaign = f"user-{u}", rng.choice(["spring", "brand", "ghost", None])
        at = T0 + rng.randrange(0, 60) * MIN
        for _ in range(rng.randrange(1, 4)):
            pages = [f"/p/{rng.randrange(9)}" for _ in range(rng.randrange(1, 5))]
            if rng.random() < 0.5:
                pages.append("/checkout/done")
            for page in pages:
                views.append((user, {"page": page, "campaign": campaign, "at": at}))
                at += rng.randrange(1, 4) * MIN
            at += rng.randrange(61, 120) * MIN
    # In event-time order, with up to 40 s of disorder (the grace is 1 minute).
    views.sort(key=lambda v: v[1]["at"] + rng.randrange(40_000))
    return views


def _offline(views: list[tuple[str, dict[str, Any]]]) -> tuple[dict, Counter]:
    by_user: dict[str, list[dict[str, Any]]] = {}
    for user, view in views:
        by_user.setdefault(user, []).append(view)
    sessions = {}
    for user, user_views in by_user.items():
        user_views.sort(key=lambda v: v["at"])
        group = [user_views[0]]
        for view in [*user_views[1:], None]:
            if view is not None and view["at"] - group[-1]["at"] <= 30 * MIN:
                group.append(view)
                continue
            window = Windowed(user, group[0]["at"], group[-1]["at"])
            sessions[window] = {
                "pages": len(group),
                "campaign": group[0]["campaign"],
                "converted": any(v["page"] == "/checkout/done" for v in group),
            }
            if view is not None:
                group = [view]
    conversions: Counter = Counter()
    windows = hopping(5 * MIN, MIN)
    for window, s in sessions.items():
        if s["converted"] and s["campaign"] is not None:
            for start in windows.starts(window.end):
                conversions[(s["campaign"], start)] += 1
    return sessions, conversions


def test_sessions_and_conversions_per_campaign_equal_the_offline_computation() -> None:
    views = _views(seed=4)
    sessions, conversions = _offline(views)
    with TestDriver(_load().app, partitions=3) as driver:
        for campaign, (name, budget) in CAMPAIGNS.items():
            driver.pipe("campaigns", campaign, {"name": name, "budget_cents": budget})
        for user, view in views:
            driver.pipe("page-views", user, view)
        for _ in range(3):  # the input has ended: quiet partitions close what they hold
            driver.advance_time(60 * MIN)
        emitted_sessions = driver.read("user-sessions")
        rows = driver.read("campaign-conversions")
        assert driver.dead_letters() == []
    assert dict(emitted_sessions) == sessions
    assert len(emitted_sessions) == len(sessions)  # each session once
    assert Counter((campaign, row["start"]) for campaign, row in rows) == Counter(
        set(conversions)
    )  # each window once
    for campaign, row in rows:
        assert row["conversions"] == conversions[(campaign, row["start"])]
        assert row["end"] == row["start"] + 5 * MIN
        name, budget = CAMPAIGNS.get(campaign, (None, None))
        assert (row["name"], row["budget_cents"]) == (name, budget)
    assert {campaign for campaign, _ in rows} == {"spring", "brand", "ghost"}
