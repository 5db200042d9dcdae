"""A sleeping workflow across a schema evolution, end to end on a real broker.

Under v1 schemas an instance starts, its step runs, and it sleeps on a durable timer with a v1
input and a v1 step result in its journal; the worker stops before the timer is due. The
payload schemas evolve the four compatible ways (a field added with a default, a field that had
a default removed, int promoted to long, an enum symbol added to an enum with a default); the
operator relaxes the payload subjects to BACKWARD_TRANSITIVE, since int→long is not readable
by v1 code and the deploy is stop-the-world. A worker with the v2 code starts: the sleeping
instance wakes, its journal reads under v2 without being taken for non-deterministic, and what
it writes (its emitted receipt and its result) carries v2's schema id; an instance started under
v2 runs beside it. Each value is checked against a plain recomputation from the inputs.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from streamflow import App
from streamflow.serde.avro.wire_format import schema_id_of
from streamflow.serde.registry.compatibility import CompatibilityMode
from streamflow.serde.registry.kafka import KafkaSchemaRegistry
from streamflow.workflow.payloads import AVRO, is_packed
from tests.avro_schemas import PAYMENTS_V1, PAYMENTS_V2, write_schemas
from tests.engine_helpers import RunningWorker, create_topic, read_topic, wait_for
from tests.workflow_schema_versions import settle_app

pytestmark = pytest.mark.kafka

SLEEP = timedelta(seconds=30)


def payments(app_name: str, receipts: str, schemas: Path, state_dir: Path, bootstrap: str) -> App:
    return settle_app(
        schemas,
        app_name=app_name,
        receipts=receipts,
        sleep=SLEEP,
        partitions=2,
        bootstrap=bootstrap,
        state_dir=state_dir,
    )


def test_a_workflow_sleeping_under_v1_wakes_under_v2_reading_its_journal_and_writing_v2(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    app_name, receipts = f"wfevolve-{run}", f"receipts-{run}"
    create_topic(kafka_bootstrap, receipts, 2)
    v1, v2 = (
        write_schemas(tmp_path / "v1", PAYMENTS_V1),
        write_schemas(tmp_path / "v2", PAYMENTS_V2),
    )
    state = tmp_path / "state"
    old_input = {"account": "acc-1", "amount": 2**30, "channel": "BRANCH", "memo": "rent"}
    new_input = {"account": "acc-2", "amount": 2**40, "channel": "MOBILE", "priority": 3}

    # -- v1: start, run the step, fall asleep; stop before the timer is due -------------------
    app1 = payments(app_name, receipts, v1, state, kafka_bootstrap)
    worker = RunningWorker(app1)
    try:
        client = app1.client()
        client.start("settle", id="t1", input=old_input)

        def asleep() -> bool:
            view = client.get("settle", "t1")
            return view is not None and any(e["kind"] == "sleep" for e in view.entries)

        wait_for(asleep, 90, what="t1 asleep under v1")
    finally:
        worker.stop()
    view = client.get("settle", "t1")
    assert view.status == "running"
    v1_input_id = app1.workflows.node_of("settle").versions[1].input.schema_id
    assert schema_id_of(_bytes(view.header["input"])) == v1_input_id
    step = next(e for e in view.entries if e["kind"] == "step")
    assert is_packed(step["result"]) and step["status"] == "done"

    # -- v2: relax the journal subjects (stop-the-world int→long), restart with v2 code --------
    registry = KafkaSchemaRegistry(kafka_bootstrap)
    for subject in (
        f"{app_name}.settle-input",
        f"{app_name}.settle-result",
        f"{app_name}.step.charge-arg0",
        f"{app_name}.step.charge-result",
    ):
        registry.set_mode(subject, CompatibilityMode.BACKWARD_TRANSITIVE)
    app2 = payments(app_name, receipts, v2, state, kafka_bootstrap)
    worker = RunningWorker(app2)
    try:
        client = app2.client()
        client.start("settle", id="t2", input=new_input)
        wait_for(
            lambda: all(
                (v := client.get("settle", i)) is not None and v.done for i in ("t1", "t2")
            ),
            120,
            what="both instances done under v2",
        )
    finally:
        worker.stop()

    # The truth, recomputed from the inputs: v1's step doubled the v1 amount and its ``note``
    # is gone under v2, whose ``charged_by`` reads as its default; v2's step ran on v2's input.
    truth = {
        "t1": {"account": "acc-1", "amount": 2**31, "channel": "BRANCH", "charged_by": "unknown"},
        "t2": {"account": "acc-2", "amount": 2**41, "channel": "MOBILE", "charged_by": "bank-p3"},
    }
    views = {i: client.get("settle", i) for i in truth}
    assert {i: v.status for i, v in views.items()} == {"t1": "completed", "t2": "completed"}
    assert {i: v.result for i, v in views.items()} == truth
    wdef = app2.workflows.node_of("settle").versions[1]
    assert wdef.result.schema_id != v1_input_id
    assert {schema_id_of(_bytes(v.header["result"])) for v in views.values()} == {
        wdef.result.schema_id
    }
    spec = app2.topology.topics[receipts]
    out_id = spec.value_serde.schema_id  # type: ignore[attr-defined]
    records = read_topic(kafka_bootstrap, receipts)
    assert len(records) == 2  # one receipt per instance: the wake-up emitted exactly once
    assert {schema_id_of(m.value()) for m in records} == {out_id}
    assert {m.key().decode(): spec.value_serde.deserialize(m.value()) for m in records} == truth


def _bytes(packed: dict) -> bytes:
    import base64

    return base64.b64decode(packed[AVRO])
