"""`app.every`: user code on a wall-clock schedule, in the tasks that own its stores, with the
stores and topics of its task; a failing run is rolled back and dead-lettered."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streamflow import App, ConfigError, TopologyError
from streamflow.operate.dead_letter_format import HEADER_STAGE
from streamflow.testing import TestDriver


def _app(fn) -> App:
    app = App("shop")
    orders, reports = app.topic("orders"), app.topic("reports")
    app.stream(orders).aggregate("totals", initial=lambda: 0, fn=lambda acc, o: acc + o["cents"])
    assert reports.name == "reports"
    app.every(timedelta(minutes=1), fn, stores=["totals"], name="report")
    return app


def _report_and_reset(ctx) -> None:
    totals = ctx.store("totals")
    for key, cents in list(totals.items()):
        ctx.send("reports", key, {"cents": cents, "partition": ctx.partition})
        totals.delete(key)


def test_runs_every_interval_in_each_task_with_its_store_and_sends_records() -> None:
    with TestDriver(_app(_report_and_reset), partitions=2) as driver:
        for i in range(10):
            driver.pipe("orders", f"c{i % 3}", {"cents": 100 + i})
        driver.advance_time(30_000)
        assert driver.read("reports") == []
        driver.advance_time(30_000)
        reports = dict(driver.read("reports"))
        assert {k: v["cents"] for k, v in reports.items()} == {
            "c0": 100 + 103 + 106 + 109,
            "c1": 101 + 104 + 107,
            "c2": 102 + 105 + 108,
        }
        assert {v["partition"] for v in reports.values()} <= {0, 1}
        assert driver.store("totals") == {}  # its deletes committed
        driver.pipe("orders", "c1", {"cents": 5})
        driver.advance_time(60_000)
        assert driver.read("reports")[-1] == (
            "c1",
            {"cents": 5, "partition": reports["c1"]["partition"]},
        )


def test_a_failing_punctuation_is_rolled_back_dead_lettered_and_runs_again() -> None:
    calls: list[int] = []

    def flaky(ctx) -> None:
        calls.append(ctx.now_ms)
        ctx.store("totals").put("written-then-undone", 1)
        if len(calls) == 1:
            raise RuntimeError("report service down")

    with TestDriver(_app(flaky)) as driver:
        driver.pipe("orders", "c", {"cents": 7})
        driver.advance_time(60_000)
        (dead,) = driver.dead_letters()
        headers = dict(dead.headers() or [])
        assert headers[HEADER_STAGE] == b"punctuate"
        assert b"report service down" in b" ".join(headers.values())
        assert driver.store("totals") == {"c": 7}  # the failed run's write is undone
        driver.advance_time(60_000)
        assert len(calls) == 2 and driver.store("totals") == {"c": 7, "written-then-undone": 1}


def test_misuse_is_refused_with_what_to_do() -> None:
    app = App("x")
    with pytest.raises(ConfigError, match="needs stores"):
        app.every(timedelta(seconds=1), lambda ctx: None, stores=[])
    with pytest.raises(ConfigError, match="store 'nope' is not declared"):
        app.every(timedelta(seconds=1), lambda ctx: None, stores=["nope"])
    app.store("lonely")
    app.every(timedelta(seconds=1), lambda ctx: None, stores=["lonely"])
    with pytest.raises(TopologyError, match="uses stores \\(lonely\\) that no stream uses"):
        app.topology.sub_topologies()


def test_a_late_cycle_runs_once_and_keeps_to_the_schedule() -> None:
    runs: list[int] = []
    start = 1_700_000_000_000
    with TestDriver(_app(lambda ctx: runs.append(ctx.now_ms)), start_time_ms=start) as driver:
        driver.pipe("orders", "c", {"cents": 1})
        # A worker late by three and a half intervals: one run, not three.
        driver.advance_time(60_000 * 3 + 30_000, late=True)
        driver.advance_time(30_000)  # the schedule's next point: 4 minutes after the start
        assert runs == [start + 210_000, start + 240_000]


def _stream_time_app(fn) -> App:
    app = App("shop")
    orders = app.topic("orders")
    app.topic("reports")
    app.stream(orders).aggregate("totals", initial=lambda: 0, fn=lambda acc, o: acc + o["cents"])
    app.every(timedelta(minutes=1), fn, stores=["totals"], name="report", on="stream_time")
    return app


MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN


def test_a_stream_time_schedule_fires_on_event_time_not_the_wall_clock() -> None:
    with TestDriver(_stream_time_app(_report_and_reset)) as driver:
        driver.pipe("orders", "c", {"cents": 1}, timestamp=T0 + 10_000)
        driver.pipe("orders", "c", {"cents": 2}, timestamp=T0 + 50_000)
        driver.advance_time(10 * MIN)  # the wall clock does not move stream time
        assert driver.read("reports") == []
        driver.pipe("orders", "c", {"cents": 4}, timestamp=T0 + 30_000)  # out of order: no
        assert driver.read("reports") == []
        # Stream time reaches T0 + 1 min: the schedule fires after this record, with it counted.
        driver.pipe("orders", "c", {"cents": 8}, timestamp=T0 + MIN)
        ((key, report),) = driver.read("reports")
        assert (key, report["cents"]) == ("c", 15)
        (sent,) = driver.messages("reports")
        assert sent.timestamp()[1] == T0 + MIN  # stamped with the point of the schedule
        # A jump over three intervals fires once, at the last point it passed.
        driver.pipe("orders", "c", {"cents": 16}, timestamp=T0 + 4 * MIN + 5)
        assert [r["cents"] for _, r in driver.read("reports")] == [15, 16]
        assert driver.messages("reports")[-1].timestamp()[1] == T0 + 4 * MIN


def test_a_restarted_task_neither_fires_an_interval_again_nor_skips_one(tmp_path) -> None:
    app = _stream_time_app(_report_and_reset)
    with TestDriver(app, state_dir=tmp_path) as driver:
        driver.pipe("orders", "c", {"cents": 1}, timestamp=T0 + 10_000)
        driver.pipe("orders", "c", {"cents": 2}, timestamp=T0 + MIN + 10)  # fires at T0 + 1 min
        assert [r["cents"] for _, r in driver.read("reports")] == [3]
    with TestDriver(app, state_dir=tmp_path) as driver:
        # Stream time came back as T0 + 1 min + 10 ms: records before it fire nothing (with
        # the schedule forgotten, the first would start it anew and the second fire T0 + 1 min
        # again).
        driver.pipe("orders", "c", {"cents": 4}, timestamp=T0 + 20_000)
        driver.pipe("orders", "c", {"cents": 0}, timestamp=T0 + MIN + 5)
        assert driver.read("reports") == []
        # ... and the next point of the schedule is T0 + 2 min, not one interval after restart.
        driver.pipe("orders", "c", {"cents": 8}, timestamp=T0 + 2 * MIN)
        assert [r["cents"] for _, r in driver.read("reports")] == [12]


def test_stream_time_is_the_extracted_event_time_when_the_source_has_one() -> None:
    app = App("shop")
    orders = app.topic("orders")
    app.topic("reports")
    app.stream(orders, timestamp="at").aggregate(
        "totals", initial=lambda: 0, fn=lambda acc, o: acc + o["cents"]
    )
    app.every(timedelta(minutes=1), _report_and_reset, stores=["totals"], on="stream_time")
    with TestDriver(app) as driver:
        driver.pipe("orders", "c", {"cents": 1, "at": T0 + 5}, timestamp=T0 + 5 * MIN)
        assert driver.read("reports") == []  # the Kafka timestamp is not the event time here
        driver.pipe("orders", "c", {"cents": 2, "at": T0 + MIN}, timestamp=T0)
        assert [r["cents"] for _, r in driver.read("reports")] == [3]


def test_a_schedule_on_an_unknown_clock_is_refused() -> None:
    app = App("shop")
    app.store("totals")
    with pytest.raises(ConfigError, match="on='event_time'"):
        app.every(timedelta(minutes=1), _report_and_reset, stores=["totals"], on="event_time")
