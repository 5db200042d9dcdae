"""SIGKILL workers while they left-join page views with clicks: every joined pair, and every
view that joined nothing, is emitted exactly once, as an offline join of the same input says.

Two `streamflow run` processes share a 6-partition stream-stream join (1 s apart at most, 3 s of
grace). Views and clicks arrive interleaved, with up to 2 s of disorder (within the grace: none
is late). A random worker is SIGKILLed every few seconds and restarted, every other time with its
state dir deleted: both sides' buffers, which views joined already and the stream time must all
come back from the changelogs. Finally one view per partition far in the future lets every
other view's window end, so views without a click are emitted with None.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamflow.runtime.partitioner import partition_for
from tests.crash.test_sigkill_keyed_count import _committed_total
from tests.engine_helpers import (
    REPO,
    WorkerProcess,
    create_topic,
    kill_while_producing,
    produce_events,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 6
APP_FILE = REPO / "tests" / "apps" / "stream_join.py"
EVENTS = int(os.environ.get("SF_JOIN_EVENTS", "12000"))
KILLS = int(os.environ.get("SF_JOIN_KILLS", "3"))
WITHIN_MS, GRACE_MS = 1_000, 3_000
T0 = int(time.time() * 1000)  # today: output retention counts from the records' event times


def _events(n: int, users: int, seed: int) -> tuple[list, list]:
    """``n`` views and ``n`` clicks, 10 ms of event time apart, jittered by up to 2 s."""
    rng = random.Random(seed)
    views = [
        (f"u{rng.randrange(users)}", {"seq": i, "at": T0 + 10 * i + rng.randrange(2_000)})
        for i in range(n)
    ]
    clicks = [
        (f"u{rng.randrange(users)}", {"seq": i, "at": T0 + 10 * i + rng.randrange(2_000)})
        for i in range(n)
    ]
    return views, clicks


def _offline_left_join(views: list, clicks: list) -> Counter:
    clicks_of: dict[str, list[dict]] = {}
    for user, click in clicks:
        clicks_of.setdefault(user, []).append(click)
    truth: Counter = Counter()
    for user, view in views:
        matched = [
            c["seq"] for c in clicks_of.get(user, []) if abs(c["at"] - view["at"]) <= WITHIN_MS
        ]
        for click in matched or [None]:
            truth[(view["seq"], click)] += 1
    return truth


def test_sigkill_workers_each_pair_once_as_the_offline_join(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        "SF_TEST_APP": f"join-{run}",
        "SF_TEST_LEFT": f"join-views-{run}",
        "SF_TEST_RIGHT": f"join-clicks-{run}",
        "SF_TEST_OUTPUT": f"join-out-{run}",
        "SF_JOIN_WITHIN_MS": str(WITHIN_MS),
        "SF_JOIN_GRACE_MS": str(GRACE_MS),
    }
    for topic in ("SF_TEST_LEFT", "SF_TEST_RIGHT", "SF_TEST_OUTPUT"):
        create_topic(kafka_bootstrap, env[topic], PARTITIONS)
    views, clicks = _events(EVENTS, users=300, seed=8)
    truth = _offline_left_join(views, clicks)
    closers: dict[int, str] = {}
    for i in range(10_000):
        closers.setdefault(partition_for(f"closer-{i}".encode(), PARTITIONS), f"closer-{i}")
    end = T0 + 10 * EVENTS + 60_000
    flush = [(key, {"seq": -1, "at": end}) for key in closers.values()]

    workers = [
        WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / f"w{i}", env, tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    producers = [
        threading.Thread(target=produce_events, args=(kafka_bootstrap, env[topic], events, 1_500))
        for topic, events in (("SF_TEST_LEFT", views), ("SF_TEST_RIGHT", clicks))
    ]
    for producer in producers:
        producer.start()
    try:
        kills, wipes = kill_while_producing(producers[0], workers, KILLS, seed=9)
        for producer in producers:
            producer.join()
        produce_events(kafka_bootstrap, env["SF_TEST_LEFT"], flush)
        for topic, total in (("SF_TEST_LEFT", EVENTS + len(flush)), ("SF_TEST_RIGHT", EVENTS)):
            wait_for(
                lambda t=topic, n=total: (
                    _committed_total(kafka_bootstrap, env["SF_TEST_APP"], env[t]) == n
                ),
                timeout=240,
                interval=2,
                what=f"all of {env[topic]} committed",
            )
    finally:
        for w in workers:
            w.terminate()

    emitted = Counter(
        (pair["view"], pair["click"])
        for pair in (
            orjson.loads(m.value()) for m in read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"])
        )
    )
    dead_letters = read_topic(kafka_bootstrap, f"{env['SF_TEST_APP']}.dlq")
    assert not dead_letters, f"{len(dead_letters)} dead letters, e.g. {dead_letters[0].headers()}"
    doubled = {p: n for p, n in emitted.items() if n > 1}
    assert not doubled, f"{len(doubled)} pairs emitted more than once, e.g. {list(doubled)[:3]}"
    missing = set(truth) - set(emitted)
    extra = set(emitted) - set(truth)
    assert not missing and not extra, (
        f"{len(missing)} pairs missing (e.g. {sorted(missing)[:3]}), {len(extra)} not in the "
        f"offline join (e.g. {sorted(extra, key=str)[:3]}), of {len(truth)}"
    )
    unmatched = sum(1 for _, click in truth if click is None)
    assert 0 < unmatched < len(truth)  # both kinds of output were exercised
    assert kills >= KILLS and wipes >= KILLS // 2
