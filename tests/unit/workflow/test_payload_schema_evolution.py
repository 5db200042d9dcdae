"""Workflow payloads under Avro schema evolution, through the driver.

An instance starts under v1 schemas and sleeps with a v1 input and a v1 step result in its
journal; the driver closes. A driver with the v2 code opens the same state dir with the same
registry: the instance wakes, reads its journal under v2, passes the determinism check, and
writes its output with v2's schema id. An incompatible payload schema refuses to start, naming
the workflow and the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamflow import App
from streamflow.errors import SchemaIncompatible
from streamflow.serde.avro.serde import avro
from streamflow.serde.avro.wire_format import schema_id_of
from streamflow.serde.registry.base import InMemorySchemaRegistry
from streamflow.serde.registry.compatibility import CompatibilityMode
from streamflow.testing import TestDriver
from streamflow.workflow.payloads import AVRO, args_digest, is_packed, pack, unpack
from tests.avro_schemas import PAYMENTS_V1, PAYMENTS_V2, PAYMENTS_V3, write_schemas
from tests.workflow_schema_versions import settle_app

HOUR_MS = 3_600_000
PAYLOAD_SUBJECTS = (
    "wfschemas.settle-input",
    "wfschemas.settle-result",
    "wfschemas.step.charge-arg0",
    "wfschemas.step.charge-result",
)


def relax(registry: InMemorySchemaRegistry) -> None:
    """What an operator does before a stop-the-world deploy that promotes int to long."""
    for subject in PAYLOAD_SUBJECTS:
        registry.set_mode(subject, CompatibilityMode.BACKWARD_TRANSITIVE)


def payments(schemas: Path, *, changed_call: bool = False) -> App:
    return settle_app(schemas, changed_call=changed_call)


def test_a_sleeping_instance_started_under_v1_completes_under_v2_with_its_journal_read_as_v2(
    tmp_path: Path,
) -> None:
    v1, v2 = (
        write_schemas(tmp_path / "v1", PAYMENTS_V1),
        write_schemas(tmp_path / "v2", PAYMENTS_V2),
    )
    registry = InMemorySchemaRegistry()
    state = tmp_path / "state"
    old = {"account": "acc-1", "amount": 2**30, "channel": "BRANCH", "memo": "rent"}

    app1 = payments(v1)
    with TestDriver(app1, state_dir=state, schema_registry=registry) as driver:
        driver.workflows.start("settle", id="t1", input=old)
        view = driver.workflows.get("settle", "t1")
        assert view.status == "running"
        v1_input_id = app1.workflows.node_of("settle").versions[1].input.schema_id
        # Journaled as Avro wire format, with v1's schema id (not as JSON).
        assert is_packed(view.header["input"])
        assert schema_id_of(_bytes(view.header["input"])) == v1_input_id
        step = next(e for e in view.entries if e["kind"] == "step")
        assert step["status"] == "done" and is_packed(step["result"]) and is_packed(step["args"][0])

    relax(registry)
    app2 = payments(v2)
    new = {"account": "acc-2", "amount": 2**40, "channel": "MOBILE", "priority": 3}
    with TestDriver(app2, state_dir=state, schema_registry=registry) as driver:
        driver.workflows.start("settle", id="t2", input=new)
        driver.advance_time(HOUR_MS + 1)
        wdef = app2.workflows.node_of("settle").versions[1]
        done = {i: driver.workflows.get("settle", i) for i in ("t1", "t2")}
        assert {i: v.status for i, v in done.items()} == {"t1": "completed", "t2": "completed"}
        # The truth, recomputed: v1's step ran on the v1 input (amount doubled, note dropped
        # by v2, charged_by read as v2's default); v2's step on the v2 input.
        t1_truth = {
            "account": "acc-1",
            "amount": 2**31,
            "channel": "BRANCH",
            "charged_by": "unknown",
        }
        t2_truth = {
            "account": "acc-2",
            "amount": 2**41,
            "channel": "MOBILE",
            "charged_by": "bank-p3",
        }
        assert unpack(wdef.result, done["t1"].header["result"]) == t1_truth
        assert unpack(wdef.result, done["t2"].header["result"]) == t2_truth
        assert unpack(wdef.input, done["t1"].header["input"]) == {
            "account": "acc-1",
            "amount": 2**30,
            "channel": "BRANCH",
            "priority": 0,
        }
        # New output uses v2's schema id, for the old instance too.
        out_id = app2.topology.topics["receipts"].value_serde.schema_id  # type: ignore[attr-defined]
        assert out_id != v1_input_id
        assert [schema_id_of(m.value()) for m in driver.messages("receipts")] == [out_id, out_id]
        assert dict(driver.read("receipts")) == {"t1": t1_truth, "t2": t2_truth}
        assert schema_id_of(_bytes(done["t1"].header["result"])) == wdef.result.schema_id


def test_a_changed_avro_argument_is_still_non_deterministic_after_a_schema_change(
    tmp_path: Path,
) -> None:
    v1, v2 = (
        write_schemas(tmp_path / "v1", PAYMENTS_V1),
        write_schemas(tmp_path / "v2", PAYMENTS_V2),
    )
    registry = InMemorySchemaRegistry()
    state = tmp_path / "state"
    with TestDriver(payments(v1), state_dir=state, schema_registry=registry) as driver:
        driver.workflows.start(
            "settle", id="t1", input={"account": "a", "amount": 5, "channel": "WEB"}
        )
    relax(registry)
    with TestDriver(
        payments(v2, changed_call=True), state_dir=state, schema_registry=registry
    ) as driver:
        driver.advance_time(HOUR_MS + 1)
        view = driver.workflows.get("settle", "t1")
        assert view.status == "suspended"
        assert view.header["error"]["type"] == "NonDeterminism"
        assert "step 'charge'" in view.header["error"]["message"]


def test_an_incompatible_payload_schema_refuses_to_start_naming_workflow_and_step(
    tmp_path: Path,
) -> None:
    registry = InMemorySchemaRegistry()
    with TestDriver(
        payments(write_schemas(tmp_path / "v1", PAYMENTS_V1)), schema_registry=registry
    ):
        pass
    relax(registry)
    with TestDriver(
        payments(write_schemas(tmp_path / "v2", PAYMENTS_V2)), schema_registry=registry
    ):
        pass
    before = {s: registry.versions(s) for s in registry.subjects()}
    with pytest.raises(SchemaIncompatible) as refused:
        TestDriver(payments(write_schemas(tmp_path / "v3", PAYMENTS_V3)), schema_registry=registry)
    message = str(refused.value)
    assert "workflow 'settle' v1 input (acme.Transfer, subject 'wfschemas.settle-input')" in message
    assert (
        "step 'charge' argument 0 (acme.Transfer, subject 'wfschemas.step.charge-arg0')" in message
    )
    assert "READER_FIELD_MISSING_DEFAULT_VALUE /fields/currency" in message
    assert {s: registry.versions(s) for s in registry.subjects()} == before


def test_payload_subjects_are_full_transitive_so_int_to_long_needs_a_relaxed_mode(
    tmp_path: Path,
) -> None:
    registry = InMemorySchemaRegistry()
    with TestDriver(
        payments(write_schemas(tmp_path / "v1", PAYMENTS_V1)), schema_registry=registry
    ):
        pass
    for subject in PAYLOAD_SUBJECTS:
        assert registry.mode(subject) == CompatibilityMode.FULL_TRANSITIVE, subject
    with pytest.raises(SchemaIncompatible) as refused:
        TestDriver(payments(write_schemas(tmp_path / "v2", PAYMENTS_V2)), schema_registry=registry)
    assert "TYPE_MISMATCH /fields/amount" in str(refused.value)


def test_digest_of_avro_arguments_is_the_same_for_v1_and_v2_bytes_of_one_value(
    tmp_path: Path,
) -> None:
    registry = InMemorySchemaRegistry()
    serdes = {}
    for name, schemas in (("v1", PAYMENTS_V1), ("v2", PAYMENTS_V2)):
        app = payments(write_schemas(tmp_path / name, schemas))
        TestDriver(app, schema_registry=registry).close()
        relax(registry)
        serdes[name] = app.workflows.steps["charge"].args[0]
    value = {"account": "a", "amount": 7, "channel": "WEB"}
    from_v1 = pack(serdes["v1"], {**value, "memo": "kept by v1 only"})
    from_v2 = pack(serdes["v2"], value)
    assert from_v1 != from_v2  # other schema ids, other bytes
    assert args_digest("charge", [serdes["v2"]], [from_v1]) == args_digest(
        "charge", [serdes["v2"]], [from_v2]
    )


def test_json_payloads_are_journaled_as_plain_json(tmp_path: Path) -> None:
    app = App("wfjson", partitions=1)

    @app.step
    def double(ctx: Any, n: int) -> int:
        return n * 2

    @app.workflow
    async def plain(ctx: Any, n: int) -> int:
        return await ctx.step(double, n)

    with TestDriver(app) as driver:
        driver.workflows.start("plain", id="p", input=21)
        view = driver.workflows.get("plain", "p")
        assert (view.status, view.result, view.header["input"]) == ("completed", 42, 21)
        assert view.entries[0]["args"] == [21] and view.entries[0]["result"] == 42


def _bytes(packed: dict) -> bytes:
    import base64

    return base64.b64decode(packed[AVRO])


def test_a_declared_avro_signal_is_journaled_packed_and_read_with_the_codes_schema(
    tmp_path: Path,
) -> None:
    schemas = write_schemas(tmp_path / "v2", PAYMENTS_V2)
    app = App("wfsignals", partitions=1)
    transfer = avro("acme.Transfer", schema_dir=schemas)

    @app.workflow(signals={"amend": transfer}, result=transfer)
    async def amendable(ctx: Any, _: None) -> dict:
        first = await ctx.wait_signal("amend")
        second = await ctx.wait_signal("amend")
        return {**second, "amount": first["amount"] + second["amount"]}

    with TestDriver(app) as driver:
        driver.workflows.start("amendable", id="a", input=None)
        early = {"account": "x", "amount": 2**40, "channel": "MOBILE"}
        driver.workflows.signal("amendable", "a", "amend", early)
        driver.workflows.signal("amendable", "a", "amend", {**early, "amount": 1, "priority": 2})
        view = driver.workflows.get("amendable", "a")
        assert view.status == "completed"
        assert all(is_packed(e["result"]) for e in view.entries if e["kind"] == "signal")
        assert unpack(transfer, view.header["result"]) == {
            "account": "x",
            "amount": 2**40 + 1,
            "channel": "MOBILE",
            "priority": 2,
        }
