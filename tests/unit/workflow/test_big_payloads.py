"""Payloads larger than one record, through the driver (which holds records to the producer's
limit as a worker does): inputs, step arguments and results, signals and entity state travel
as chunks and arrive whole; past the payload limit, an error that names what is too big."""

from __future__ import annotations

import orjson
import pytest

from streamflow import App
from streamflow.cluster.record_chunks import PART_TIMEOUT_MS, ChunkReader, is_chunk, split_value
from streamflow.errors import PayloadTooLarge
from streamflow.operate.dead_letter_format import HEADER_ERROR, HEADER_TRUNCATED
from streamflow.state.chunked_values import PART_PREFIX
from streamflow.testing import TestDriver

PRODUCER = {"message.max.bytes": "300000"}
PAYLOAD_LIMIT = 2_000_000
BIG = 1_500_000  # five records' worth


def _app() -> App:
    app = App("big", kafka=PRODUCER, max_payload_bytes=PAYLOAD_LIMIT)

    @app.step(entity="docs")
    def annotate(ctx, doc_id: str, text: str) -> str:
        ctx.state = {"text": text}  # an entity state of several records
        return text.upper()  # a result of several records

    @app.workflow
    async def review(ctx, text: str) -> dict:
        shouted = await ctx.step(annotate, "d1", text)  # arguments of several records
        note = await ctx.wait_signal("note")
        return {"shouted": len(shouted), "note": len(note), "same": shouted == text.upper()}

    return app


def test_input_arguments_result_signal_and_state_over_one_record_arrive_whole() -> None:
    app = _app()
    text = "ab" * (BIG // 2)
    with TestDriver(app) as driver:
        wf = driver.workflows
        wf.start("review", id="r1", input=text)
        wf.signal("review", "r1", "note", "n" * BIG)
        view = wf.get("review", "r1")
        assert view.status == "completed", view.header
        assert view.result == {"shouted": BIG, "note": BIG, "same": True}
        assert driver.store("docs") == {"d1": {"text": text}}
        assert driver.dead_letters() == []
        limit = driver.max_record_bytes
        for topic in ("big.review.events", "big.step.annotate"):
            records = driver.messages(topic)
            assert any(is_chunk(m.value()) for m in records), topic
            assert all(len(m.key() or b"") + len(m.value() or b"") <= limit for m in records)
        for store in ("review-parked", "step-annotate-done"):  # every part joined and deleted
            for partition in range(driver.partitions):
                assert driver.store_of(store, partition).reserved_keys(PART_PREFIX) == []


def test_inputs_and_signals_past_the_payload_limit_are_refused_at_the_client() -> None:
    app = _app()
    with TestDriver(app) as driver:
        wf = driver.workflows
        with pytest.raises(PayloadTooLarge) as refused:
            wf.start("review", id="huge", input="x" * (PAYLOAD_LIMIT + 1))
        message = str(refused.value)
        assert "input of review instance 'huge'" in message
        assert f"{PAYLOAD_LIMIT + 3} bytes" in message and f"limit of {PAYLOAD_LIMIT}" in message
        wf.start("review", id="r2", input="small")
        with pytest.raises(PayloadTooLarge, match="payload of signal 'note' of review"):
            wf.signal("review", "r2", "note", "y" * (PAYLOAD_LIMIT + 1))
        assert wf.get("review", "huge") is None
        assert driver.messages("big.review.events")[-1].key() == b"r2"  # nothing of either


def test_a_last_chunk_without_its_parts_is_dead_lettered_with_the_reason() -> None:
    app = _app()
    with TestDriver(app) as driver:
        value = b'{"type":"start","id":"lost","input":"' + b"z" * 600_000 + b'"}'
        chunks = split_value(b"lost", value, driver.max_record_bytes)
        driver.pipe_raw("big.review.events", b"lost", chunks[-1])
        (dead,) = driver.dead_letters()
        reason = dict(dead.headers())[HEADER_ERROR].decode()
        assert f"chunk {len(chunks)} of {len(chunks)}" in reason
        assert "came without chunk 1" in reason
        assert driver.workflows.get("review", "lost") is None


def test_parts_whose_last_chunk_never_comes_are_dropped_with_a_dead_letter() -> None:
    app = _app()
    with TestDriver(app) as driver:
        value = b'{"type":"start","id":"cut","input":"' + b"z" * 600_000 + b'"}'
        chunks = split_value(b"cut", value, driver.max_record_bytes)
        for chunk in chunks[:-1]:  # the sender died before its last chunk
            driver.pipe_raw("big.review.events", b"cut", chunk)
        driver.workflows.start("review", id="other", input="fine")  # others go on meanwhile
        assert driver.workflows.get("review", "other").status == "running"
        assert driver.dead_letters() == []
        driver.advance_time(PART_TIMEOUT_MS + 120_000)
        (dead,) = driver.dead_letters()
        reason = dict(dead.headers())[HEADER_ERROR].decode()
        assert f"{len(chunks) - 1} chunk(s)" in reason and "were dropped" in reason
        for partition in range(driver.partitions):
            assert driver.store_of("review-parked", partition).reserved_keys(PART_PREFIX) == []


def test_a_dead_letter_over_one_record_goes_whole_as_chunks_not_cut() -> None:
    """A record that fails its processing is kept whole in the dead-letter topic: chunked
    when it is over one record, so a replay sends the record itself, not a cut copy."""
    app = App("big-dead", kafka=PRODUCER)
    app.topic("in")

    def refuse(value: dict) -> dict:
        raise ValueError("refused")

    app.stream("in").map(refuse).to("in")
    big = {"doc": "d" * 600_000}
    with TestDriver(app) as driver:
        driver.pipe("in", "k", big)
        letters = driver.dead_letters()
        assert len(letters) > 1 and all(is_chunk(m.value()) for m in letters)
        joined = ChunkReader()
        wholes = [joined.whole(m.value()) for m in letters]
        assert [complete for complete, _ in wholes] == [False] * (len(letters) - 1) + [True]
        assert orjson.loads(wholes[-1][1]) == big
        headers = dict(letters[-1].headers())
        assert b"refused" in headers[HEADER_ERROR] and HEADER_TRUNCATED not in headers


def test_the_sweep_of_parts_is_due_only_while_parts_may_wait(tmp_path) -> None:
    """A task that never saw a chunk has no sweep timer: it would fire every minute, and the
    driver's advance_time over a year would step through each one."""
    from streamflow.cluster.record_chunks import SWEEP_EVERY_MS, ChunkJoiner
    from streamflow.serde.base import BYTES, JSON
    from streamflow.state.store import KeyValueStore

    class Chunk:
        def __init__(self, value: bytes) -> None:
            self._value = value

        def value(self) -> bytes:
            return self._value

    store = KeyValueStore("parts", tmp_path / "parts", BYTES, JSON)
    now = [0]
    joiner = ChunkJoiner(store, lambda: now[0])
    later = SWEEP_EVERY_MS * 1000
    assert not joiner.due(later)
    first, last = split_value(b"k", b"x" * 5_000, 4_000)
    assert joiner.take(Chunk(first)) is None  # a part waits
    assert joiner.due(later)
    assert joiner.stale_groups(SWEEP_EVERY_MS) == []  # too young to drop, still waiting
    assert joiner.due(later)
    whole = joiner.take(Chunk(last))
    assert whole is not None and whole.value() == b"x" * 5_000
    store.prepare_commit()
    store.apply(1)
    assert joiner.stale_groups(2 * SWEEP_EVERY_MS) == []  # nothing left: no more sweeps
    assert not joiner.due(later)
    store.close()
