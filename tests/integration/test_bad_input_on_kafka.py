"""The bad-input corpus through a running worker: every case lands in the dead-letter topic
with its reason, the worker stays up, and every good record is processed once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streamflow.cluster.record_chunks import ChunkReader
from streamflow.operate.dead_letter_format import HEADER_ERROR, HEADER_TRUNCATED
from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, read_topic

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "corpus.py"

NESTED = b"[" * 10_000 + b"]" * 10_000


AVRO_CASES = [
    ("truncated Avro", b"avro-truncated", "cannot read a record"),
    ("a bad magic byte", b"avro-magic", "unknown magic byte 7"),
    ("an unknown schema id", b"avro-unknown-id", "unknown schema id 999999"),
    ("a schema id of another subject", b"avro-other-subject", "cannot be resolved"),
]
"""(case, key, a word the DLQ reason must contain) of the Avro topic's bad records."""


def _avro_cases(bootstrap: str, name: str) -> list[tuple[bytes, bytes]]:
    """The good Avro record and the bad ones, written against the registry the worker bound:
    its schema id for corpus.Reading, and the id of a schema registered under another subject."""
    import io

    from fastavro import parse_schema, schemaless_writer

    from streamflow.serde.avro.wire_format import header
    from streamflow.serde.registry.compatibility import CompatibilityMode
    from streamflow.serde.registry.kafka import KafkaSchemaRegistry

    registry = KafkaSchemaRegistry(bootstrap)
    [bound] = registry.versions(f"avro-{name}-value")
    other_schema = {
        "type": "record",
        "name": "Other",
        "namespace": "corpus",
        "fields": [{"name": "x", "type": "int"}],
    }
    other = registry.register(
        f"corpus-other-{name}-value", other_schema, default_mode=CompatibilityMode.BACKWARD
    )

    def body(schema: dict, value: dict) -> bytes:
        buf = io.BytesIO()
        schemaless_writer(buf, parse_schema(schema), value)
        return buf.getvalue()

    reading = body(orjson.loads(bound.schema), {"sensor": "s1", "value": 1.5})
    return [
        (b"avro-good", header(bound.id) + reading),
        (b"avro-truncated", header(bound.id) + reading[:-3]),
        (b"avro-magic", b"\x07" + header(bound.id)[1:] + reading),
        (b"avro-unknown-id", header(999_999) + reading),
        (b"avro-other-subject", header(other.id) + body(other_schema, {"x": 1})),
    ]


def _cases(events: str) -> list[tuple[str, str, bytes | None, bytes | None, str]]:
    """(case, topic, key, value, a word the DLQ reason must contain)."""
    return [
        ("invalid JSON", "in", b"k", b"{not json", "JSONDecodeError"),
        ("invalid UTF-8 in a str key", "in", b"\xff\xfe", b"{}", "UnicodeDecodeError"),
        ("empty value", "in", b"k", b"", "JSONDecodeError"),
        ("JSON nested 10,000 deep", "in", b"k", NESTED, "JSONDecodeError"),
        ("NaN", "in", b"k", b'{"x": NaN}', "JSONDecodeError"),
        # Refused at the sink's send (RecordTooLarge), before librdkafka's MSG_SIZE_TOO_LARGE.
        ("a 5 MB value", "in", b"k", b'"' + b"x" * (5 * 1024 * 1024) + b'"', "over the limit of"),
        ("ValueError", "in", b"k", b'{"raise": "ValueError"}', "ValueError"),
        ("KeyError", "in", b"k", b'{"raise": "KeyError"}', "KeyError"),
        ("RecursionError", "in", b"k", b'{"raise": "RecursionError"}', "RecursionError"),
        ("SystemExit", "in", b"k", b'{"raise": "SystemExit"}', "SystemExit"),
        (
            # Not a dead letter: the instance ends failed with the reason (`wait` returns).
            "a workflow input that does not fit its dataclass",
            events,
            b"w-bad",
            orjson.dumps({"type": "start", "id": "w-bad", "input": {"id": "x", "oops": 1}}),
            "",
        ),
        (
            "a signal for an unknown instance",
            events,
            b"nobody",
            orjson.dumps({"type": "signal", "id": "nobody", "name": "go"}),
            "no instance",
        ),
        (
            "a step reply for an unknown step",
            events,
            b"w-ok",
            orjson.dumps(
                {
                    "type": "step_failed",
                    "id": "w-ok",
                    "seq": 7,
                    "attempt": 1,
                    "error": {"type": "X", "message": "x"},
                }
            ),
            "",
        ),
        (
            "an event of no known type",
            events,
            b"w-ok",
            orjson.dumps({"type": "teleport", "id": "w-ok"}),
            "unknown workflow event type",
        ),
    ]


def test_every_bad_input_lands_in_the_dead_letter_topic_and_nothing_else_is_lost(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"corpus-{uuid.uuid4().hex[:8]}"
    env = {"SF_TEST_APP": name}
    app = load_app_with_env(APP_FILE, env)
    events = app.workflows.events_topic("checkout")
    client = app.client(kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        deadline = time.monotonic() + 60
        while "assigned tasks" not in worker.log_file.read_text(errors="replace"):
            assert time.monotonic() < deadline and worker.alive()
            time.sleep(0.2)
        client.start("checkout", id="w-ok", input={"id": "w-ok", "cents": 5})
        assert client.wait("checkout", "w-ok", timeout=60).result == 5
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 8_000_000})
        cases = _cases(events)
        for i, (_, topic, key, value, _) in enumerate(cases):
            topic = f"in-{name}" if topic == "in" else topic
            producer.produce(topic, value, key)
            producer.produce(f"in-{name}", orjson.dumps({"good": i}), b"good")  # after each case
        for key, value in _avro_cases(kafka_bootstrap, name):
            producer.produce(f"avro-{name}", value, key)
        producer.produce(f"in-{name}", None, b"null-value")  # null value: a tombstone, mapped
        producer.produce(f"in-{name}", b'{"null": "key"}', None)  # null key: mapped
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 90
        while True:
            out = read_topic(kafka_bootstrap, f"out-{name}")
            if len(out) >= len(cases) + 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
        # A dead letter over one record went as chunks: keep each once, joined.
        chunks, dead, whole = ChunkReader(), [], []
        for m in read_topic(kafka_bootstrap, f"{name}.dlq"):
            complete, value = chunks.whole(m.value())
            if complete:
                dead.append(m)
                whole.append(value)
        refused = client.wait("checkout", "w-bad", timeout=60)
        assert refused.status == "failed", refused.header
        assert "does not fit Order (missing 'cents')" in refused.header["error"]["message"]
        assert worker.alive()
    finally:
        assert worker.terminate() == 0
    values = [orjson.loads(m.value()) for m in out if m.value() and b"good" in m.value()]
    goods = [v["good"] for v in values if isinstance(v["good"], int)]
    assert goods == list(range(len(cases))), "every good record once, in order"
    assert any(m.key() == b"null-value" and m.value() is None for m in out)
    avro_out = [orjson.loads(m.value()) for m in out if m.value() and b'"avro"' in m.value()]
    assert avro_out == [{"good": "avro", "sensor": "s1"}], "the good Avro record, once"
    assert any(m.key() is None for m in out)
    # The stale step reply is ignored (a reply for a call the journal does not have), not
    # dead-lettered: the orchestrator drops duplicate and stale replies by design.
    expected = [c for c in cases if c[4]] + [
        (case, "avro", key, None, word) for case, key, word in AVRO_CASES
    ]
    reasons = [dict(m.headers()) for m in dead]
    assert len(dead) == len(expected), [r[HEADER_ERROR][:80] for r in reasons]
    # Records of the two source topics reach the dead-letter topic in either order.
    for case, _, key, value, word in expected:
        match = [
            r
            for r, m in zip(reasons, dead, strict=True)
            if word.encode() in r[HEADER_ERROR]
            and m.key() == (key if len(key or b"") < 100 else m.key())
        ]
        assert match, f"{case}: no dead letter says {word!r}"
        if case == "a 5 MB value":  # whole, in chunks: a replay sends the record itself
            assert HEADER_TRUNCATED not in match[0]
            assert value in whole
