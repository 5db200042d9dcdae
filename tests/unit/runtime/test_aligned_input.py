"""A task reading several topics takes their records in timestamp order, waits (a bounded time)
for a topic whose partition is behind, and commits only up to what it has processed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from streamflow.runtime.aligned_input import AlignedInput


@dataclass
class Msg:
    _topic: str
    _offset: int
    ts: int

    def topic(self) -> str:
        return self._topic

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)


def _ids(msgs: list[Msg]) -> list[tuple[str, int]]:
    return [(m.topic(), m.offset()) for m in msgs]


def test_records_of_both_topics_come_out_in_timestamp_order() -> None:
    aligned = AlignedInput(["views", "clicks"], 0, lambda *_: False, 1.0)
    for offset, ts in enumerate([10, 20, 30]):
        aligned.add(Msg("views", offset, ts))
    for offset, ts in enumerate([5, 25]):
        aligned.add(Msg("clicks", offset, ts))
    assert _ids(aligned.take()) == [
        ("clicks", 0),
        ("views", 0),
        ("views", 1),
        ("clicks", 1),
        ("views", 2),
    ]
    assert aligned.held == 0


def test_a_lagging_topic_is_waited_for_and_offsets_stop_at_the_first_held_record() -> None:
    lagging = {"clicks": True}
    aligned = AlignedInput(["views", "clicks"], 3, lambda t, p, o: lagging.get(t, False), 60.0)
    aligned.add(Msg("views", 7, 100))
    aligned.add(Msg("views", 8, 200))
    assert aligned.take() == []  # clicks has records not fetched yet: they may be older
    assert aligned.committable("views")(9) == 7
    assert aligned.committable("clicks")(4) == 4  # nothing held there
    aligned.add(Msg("clicks", 4, 150))
    assert _ids(aligned.take()) == [("views", 7), ("clicks", 4)]  # and waits again for clicks
    lagging["clicks"] = False  # caught up: nothing to wait for
    assert _ids(aligned.take()) == [("views", 8)]
    assert aligned.committable("views")(9) == 9


def test_the_wait_for_a_lagging_topic_is_bounded() -> None:
    aligned = AlignedInput(["views", "clicks"], 0, lambda t, p, o: t == "clicks", 0.05)
    aligned.add(Msg("views", 0, 1))
    assert aligned.take() == []
    time.sleep(0.06)
    aligned.add(Msg("views", 1, 2))
    assert _ids(aligned.take()) == [("views", 0), ("views", 1)]  # waited long enough
    aligned.add(Msg("views", 2, 3))
    assert _ids(aligned.take()) == [("views", 2)]  # no new wait until a click comes


def test_an_abort_clears_what_is_held() -> None:
    aligned = AlignedInput(["a", "b"], 0, lambda *_: True, 60.0)
    aligned.add(Msg("a", 0, 1))
    assert aligned.take() == []
    aligned.clear()
    assert aligned.held == 0
    assert aligned.committable("a")(5) == 5


def test_a_source_with_an_event_time_extractor_is_ordered_by_event_time() -> None:
    import operator

    import orjson

    from streamflow.runtime.aligned_input import extracted_time
    from streamflow.serde.base import JSON
    from streamflow.topology.specs import TopicSpec

    @dataclass
    class Valued(Msg):
        body: bytes = b""

        def value(self) -> bytes:
            return self.body

    views = TopicSpec("views", JSON, JSON)
    time_of = {"views": extracted_time(views, operator.itemgetter("at"))}
    aligned = AlignedInput(["views", "clicks"], 0, lambda *_: False, 1.0, time_of)
    # Produced late (record timestamp 900) but it happened at 100: it goes first.
    aligned.add(Valued("views", 0, 900, orjson.dumps({"at": 100})))
    aligned.add(Valued("views", 1, 901, b"not json"))  # undecodable: its record timestamp
    aligned.add(Msg("clicks", 0, 500))
    assert _ids(aligned.take()) == [("views", 0), ("clicks", 0), ("views", 1)]
