"""Schema evolution end to end on a real broker.

A topology (Avro input topic → aggregate into a store with an Avro value → Avro output topic)
runs under v1 schemas and stops. The schemas evolve the four compatible ways (a field added with
a default, a field that had a default removed, int promoted to long, an enum symbol added to an
enum with a default), the worker's state dir is deleted, and a worker with the v2 code starts:
its store is restored from a changelog written under v1, old producers keep writing v1 input,
new ones write v2, and every aggregate continues exactly where v1 left it (checked against a
plain-Python fold of all the input), written with v2's schema id. Then an incompatible store
schema is refused at start, naming the store and the rule, with nothing written.

The sleeping-workflow half of the check is tests/integration/test_workflow_schema_evolution.py.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamflow.app import App
from streamflow.errors import SchemaIncompatible
from streamflow.runtime.worker import Worker
from streamflow.serde.avro.serde import AvroSerde, avro
from streamflow.serde.avro.wire_format import schema_id_of
from streamflow.serde.registry.compatibility import CompatibilityMode
from streamflow.serde.registry.kafka import KafkaSchemaRegistry
from tests.avro_schemas import READINGS_V1, READINGS_V2, READINGS_V3, write_schemas
from tests.engine_helpers import RunningWorker, create_topic, read_topic, wait_for

pytestmark = pytest.mark.kafka


def fold(stats: dict[str, Any], reading: dict[str, Any]) -> dict[str, Any]:
    count = stats["count"] + 1
    out = {
        "count": count,
        "max_value": max(stats["max_value"], reading["value"]),
        "last_status": reading["status"],
    }
    if "mean" in stats:  # v2 code: the field it added
        out["mean"] = stats["mean"] + (reading["value"] - stats["mean"]) / count
    return out


def stats_app(names: dict[str, str], schemas: Path, state_dir: Path, bootstrap: str) -> App:
    app = App(names["app"], bootstrap=bootstrap, state_dir=state_dir)
    readings = app.topic(names["input"], value=avro("acme.Reading", schema_dir=schemas))
    out = app.topic(names["output"], value=avro("acme.Stats", schema_dir=schemas))
    has_mean = any(
        f["name"] == "mean" for f in json.loads((schemas / "stats.avsc").read_text())["fields"]
    )
    zero: dict[str, Any] = {"count": 0, "max_value": -(2**62), "last_status": "OK"}
    if has_mean:
        zero["mean"] = 0.0
    app.stream(readings).aggregate(
        "stats", initial=lambda: dict(zero), fn=fold, value=avro("acme.Stats", schema_dir=schemas)
    ).to(out)
    return app


def produce(bootstrap: str, topic: str, serde: AvroSerde, readings: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for reading in readings:
        producer.produce(topic, key=reading["sensor"].encode(), value=serde.serialize(reading))
    assert producer.flush(30) == 0


def producer_serde(bootstrap: str, schemas: Path, subject: str) -> AvroSerde:
    """What an upstream service with that schema version writes with."""
    serde = avro("acme.Reading", schema_dir=schemas)
    registry = KafkaSchemaRegistry(bootstrap)
    serde.bind(
        registry,
        registry.register(subject, serde.schema_text, default_mode=CompatibilityMode.BACKWARD).id,
    )
    return serde


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        ends = {}
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                ends[(topic, p)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10
                )[1]
        return ends
    finally:
        consumer.close()


def test_v1_state_and_records_read_under_v2_and_an_incompatible_store_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    names = {"app": f"evolve-{run}", "input": f"readings-{run}", "output": f"stats-{run}"}
    create_topic(kafka_bootstrap, names["input"], 2)
    create_topic(kafka_bootstrap, names["output"], 2)
    v1, v2, v3 = (
        write_schemas(tmp_path / n, s)
        for n, s in (("v1", READINGS_V1), ("v2", READINGS_V2), ("v3", READINGS_V3))
    )
    state = tmp_path / "state"
    subject = f"{names['input']}-value"
    sensors = [f"s{i}" for i in range(6)]
    phase1 = [
        {"sensor": s, "value": 10 * i + j, "status": ["OK", "FAIL"][j % 2], "firmware": "1.0"}
        for i, s in enumerate(sensors)
        for j in range(5)
    ]
    old_later = [
        {"sensor": s, "value": -i, "status": "FAIL", "firmware": "1.2"}
        for i, s in enumerate(sensors)
    ]
    new_later = [
        {"sensor": s, "value": 2**40 + i, "status": "DEGRADED", "unit": "kelvin"}
        for i, s in enumerate(sensors)
    ]

    # -- v1 ------------------------------------------------------------------------------------
    old_producer = producer_serde(kafka_bootstrap, v1, subject)
    produce(kafka_bootstrap, names["input"], old_producer, phase1)
    worker = RunningWorker(stats_app(names, v1, state, kafka_bootstrap))
    try:
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, names["output"], timeout=10)) == len(phase1),
            90,
            what="v1 aggregates",
        )
    finally:
        worker.stop()
    v1_outputs = read_topic(kafka_bootstrap, names["output"])
    v1_ids = {schema_id_of(m.value()) for m in v1_outputs}

    # -- v2: state dir gone (restore from a v1 changelog), old and new producers ----------------
    shutil.rmtree(state)
    app2 = stats_app(names, v2, state, kafka_bootstrap)
    worker = RunningWorker(app2)
    try:
        produce(kafka_bootstrap, names["input"], old_producer, old_later)
        produce(
            kafka_bootstrap, names["input"], producer_serde(kafka_bootstrap, v2, subject), new_later
        )
        total = len(phase1) + len(old_later) + len(new_later)
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, names["output"], timeout=10)) == total,
            90,
            what="v2 aggregates",
        )
    finally:
        worker.stop()
    outputs = read_topic(kafka_bootstrap, names["output"])
    seen = {(m.partition(), m.offset()) for m in v1_outputs}
    new_outputs = [m for m in outputs if (m.partition(), m.offset()) not in seen]
    v2_id = app2.topology.topics[names["output"]].value_serde.schema_id  # type: ignore[attr-defined]
    assert v2_id not in v1_ids
    assert {schema_id_of(m.value()) for m in new_outputs} == {v2_id}

    # The truth: a plain fold of all input per sensor, in produce order; the v1 phase has no
    # "mean", which v2 reads as its default 0.0 from the restored state.
    truth: dict[str, dict[str, Any]] = {}
    for reading in phase1:
        truth[reading["sensor"]] = fold(
            truth.get(reading["sensor"], {"count": 0, "max_value": -(2**62), "last_status": "OK"}),
            reading,
        )
    for stats in truth.values():
        stats["mean"] = 0.0
    for reading in old_later + new_later:
        truth[reading["sensor"]] = fold(truth[reading["sensor"]], reading)
    decode = app2.topology.topics[names["output"]].value_serde.deserialize
    last = {m.key().decode(): decode(m.value()) for m in new_outputs}
    assert last == truth
    # Old v1 output records read under v2 as well.
    assert {decode(m.value())["mean"] for m in v1_outputs} == {0.0}
    assert all("source" not in decode(m.value()) for m in v1_outputs)

    # -- v3: the store's schema changed incompatibly -------------------------------------------
    before = end_offsets(kafka_bootstrap, [names["output"], f"{names['app']}-stats-changelog"])
    registry = KafkaSchemaRegistry(kafka_bootstrap)
    versions_before = registry.versions(f"{names['app']}-stats-value")
    app3 = stats_app(names, v3, state, kafka_bootstrap)
    with pytest.raises(SchemaIncompatible) as refused:
        Worker(app3.topology, app3.config, app3.dead_letter_topic).run(
            install_signal_handlers=False
        )
    message = str(refused.value)
    assert f"store 'stats' value (acme.Stats, subject '{names['app']}-stats-value')" in message
    assert "READER_FIELD_MISSING_DEFAULT_VALUE /fields/median" in message
    assert (
        end_offsets(kafka_bootstrap, [names["output"], f"{names['app']}-stats-changelog"]) == before
    )
    assert (
        KafkaSchemaRegistry(kafka_bootstrap).versions(f"{names['app']}-stats-value")
        == versions_before
    )
