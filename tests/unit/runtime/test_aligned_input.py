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


def _at_end(aligned: AlignedInput, *topics: str) -> AlignedInput:
    for topic in topics:
        aligned.reached_end(topic)
    return aligned


def test_records_of_both_topics_come_out_in_timestamp_order() -> None:
    aligned = AlignedInput(["views", "clicks"], 0, 60.0)
    for offset, ts in enumerate([10, 20, 30]):
        aligned.add(Msg("views", offset, ts))
    for offset, ts in enumerate([5, 25]):
        aligned.add(Msg("clicks", offset, ts))
    assert _ids(aligned.take()) == [("clicks", 0), ("views", 0), ("views", 1), ("clicks", 1)]
    # clicks is empty now and not known to be at its end: views@30 waits (a click may be older)
    assert aligned.take() == []
    aligned.reached_end("clicks")
    assert _ids(aligned.take()) == [("views", 2)]
    assert aligned.held == 0


def test_a_topic_not_at_its_end_is_waited_for_and_offsets_stop_at_the_first_held() -> None:
    aligned = AlignedInput(["views", "clicks"], 3, 60.0)
    aligned.add(Msg("views", 7, 100))
    aligned.add(Msg("views", 8, 200))
    assert aligned.take() == []  # clicks' partition may hold older records not fetched yet
    assert aligned.committable("views")(9) == 7
    assert aligned.committable("clicks")(4) == 4  # nothing held there
    aligned.add(Msg("clicks", 4, 150))
    assert _ids(aligned.take()) == [("views", 7), ("clicks", 4)]  # and waits again for clicks
    aligned.reached_end("clicks")  # the consumer read it to its end: nothing to wait for
    assert _ids(aligned.take()) == [("views", 8)]
    assert aligned.committable("views")(9) == 9
    aligned.add(Msg("clicks", 5, 300))  # a new record: no longer known to be at its end
    aligned.add(Msg("views", 9, 400))
    assert _ids(aligned.take()) == [("clicks", 5)]


def test_the_wait_for_a_silent_topic_is_bounded_and_said(caplog) -> None:
    aligned = AlignedInput(["views", "clicks"], 0, 0.05)
    aligned.add(Msg("views", 0, 1))
    assert aligned.take() == []
    time.sleep(0.06)
    aligned.add(Msg("views", 1, 2))
    assert _ids(aligned.take()) == [("views", 0), ("views", 1)]  # waited long enough
    assert "clicks[0] sent nothing for 0 s" in caplog.text
    aligned.add(Msg("views", 2, 3))
    assert _ids(aligned.take()) == [("views", 2)]  # no new wait until a click comes


def test_a_topic_holding_too_many_records_is_paused_until_down_to_half() -> None:
    aligned = AlignedInput(["views", "clicks"], 0, 60.0, limit=4)
    for offset in range(6):
        aligned.add(Msg("views", offset, offset))
    assert aligned.take() == []
    assert aligned.to_pause(set()) == {"views"}
    aligned.add(Msg("clicks", 0, 2))
    aligned.take()  # views at 0, 1, 2 and the click at 2: three views left, more than half
    assert aligned.to_pause({"views"}) == {"views"}
    aligned.add(Msg("clicks", 1, 3))
    aligned.take()  # the view and the click at 3: two views left, half the limit
    assert aligned.to_pause({"views"}) == set()


def test_an_abort_clears_what_is_held() -> None:
    aligned = _at_end(AlignedInput(["a", "b"], 0, 60.0), "b")
    aligned.add(Msg("a", 0, 1))
    aligned.add(Msg("a", 1, 2))
    aligned.clear()
    assert aligned.held == 0
    assert aligned.committable("a")(5) == 5
    aligned.add(Msg("a", 0, 1))
    assert aligned.take() == []  # b's end is to be learnt again after the rewind


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
    aligned = _at_end(AlignedInput(["views", "clicks"], 0, 60.0, time_of), "views", "clicks")
    # Produced late (record timestamp 900) but it happened at 100: it goes first.
    aligned.add(Valued("views", 0, 900, orjson.dumps({"at": 100})))
    aligned.add(Valued("views", 1, 901, b"not json"))  # undecodable: its record timestamp
    aligned.add(Msg("clicks", 0, 500))
    aligned.reached_end("views")
    aligned.reached_end("clicks")
    assert _ids(aligned.take()) == [("views", 0), ("clicks", 0), ("views", 1)]
