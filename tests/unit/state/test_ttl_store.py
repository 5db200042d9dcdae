"""Store TTL through the in-process driver: an expired key reads as absent at once, the sweep
deletes it through the changelog (a tombstone), and a restart does not bring it back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from streamflow import App
from streamflow.testing import TestDriver


def _app() -> App:
    app = App("visits")
    visits, counts = app.topic("visits"), app.topic("counts")
    app.stream(visits).aggregate(
        "per-user", initial=lambda: 0, fn=lambda n, _v: n + 1, ttl=timedelta(minutes=1)
    ).to(counts)
    return app


def test_a_key_not_written_for_its_ttl_starts_again() -> None:
    with TestDriver(_app()) as driver:
        driver.pipe("visits", "u", {})
        driver.advance_time(50_000)
        driver.pipe("visits", "u", {})  # written again: its minute starts over
        driver.advance_time(50_000)
        driver.pipe("visits", "u", {})
        driver.advance_time(61_000)
        driver.pipe("visits", "u", {})  # expired: counting starts from the beginning
        assert [n for _, n in driver.read("counts")] == [1, 2, 3, 1]


def test_the_sweep_writes_tombstones_and_a_restart_keeps_them(tmp_path: Path) -> None:
    changelog = "visits-per-user-changelog"
    with TestDriver(_app(), state_dir=tmp_path) as driver:
        for user in ("a", "b", "c"):
            driver.pipe("visits", user, {})
        driver.advance_time(40_000)
        driver.pipe("visits", "b", {})  # b stays fresh
        driver.advance_time(30_000)  # a and c are 70 s old; the sweep (every 15 s) runs
        tombstones = [m.key() for m in driver.messages(changelog) if m.value() is None]
        assert sorted(tombstones) == [b"a", b"c"]
        assert driver.store("per-user") == {"b": 2}
    with TestDriver(_app(), state_dir=tmp_path) as driver:
        assert driver.store("per-user") == {"b": 2}
        driver.pipe("visits", "a", {})
        assert driver.read("counts") == [("a", 1)]


def test_a_fresh_key_is_not_swept() -> None:
    with TestDriver(_app()) as driver:
        driver.pipe("visits", "u", {})
        for _ in range(10):
            driver.advance_time(20_000)
            driver.pipe("visits", "u", {})
        assert driver.store("per-user") == {"u": 11}
        assert all(m.value() is not None for m in driver.messages("visits-per-user-changelog"))
