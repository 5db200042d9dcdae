"""Search attributes and listing filters, through the in-process driver (real RocksDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamflow import App
from streamflow.testing import TestDriver
from streamflow.workflow.instance_filter import InstanceFilter


def _app() -> App:
    app = App("attrs", partitions=3)

    @app.step
    def charge(ctx, amount: int) -> int:
        return amount

    @app.workflow
    async def order(ctx, spec: dict) -> int:
        ctx.set_attributes(customer=spec["customer"], big=spec["amount"] > 100)
        paid = await ctx.step(charge, spec["amount"])
        ctx.set_attributes(stage="paid")
        if spec.get("wait"):
            await ctx.wait_signal("ship")
        return paid

    @app.workflow
    async def bad(ctx, kind: str) -> None:
        if kind == "type":
            ctx.set_attributes(items=[1, 2])
        else:
            ctx.set_attributes(note="x" * 300)

    return app


def test_listing_filters_by_attribute_status_and_start_time() -> None:
    app = _app()
    with TestDriver(app) as driver:
        wf = driver.workflows
        for i, (customer, amount, wait) in enumerate(
            [("c-1", 50, False), ("c-2", 500, False), ("c-1", 900, True), ("c-3", 5, True)]
        ):
            wf.start(
                "order", id=f"o{i}", input={"customer": customer, "amount": amount, "wait": wait}
            )

        def ids(**filters) -> list[str]:
            return [v.id for v in wf.list("order", **filters)]

        assert ids() == ["o0", "o1", "o2", "o3"]
        assert ids(attributes={"customer": "c-1"}) == ["o0", "o2"]
        assert ids(attributes={"customer": "c-1", "big": True}) == ["o2"]
        assert ids(status="running") == ["o2", "o3"]
        assert ids(status="completed", attributes={"stage": "paid"}) == ["o0", "o1"]
        assert ids(attributes={"customer": "nobody"}) == []
        future = datetime.now(UTC) + timedelta(hours=1)
        assert ids(started_after=future) == []
        assert ids(started_before=future) == ["o0", "o1", "o2", "o3"]
        summary = next(iter(wf.list("order", attributes={"customer": "c-2"})))
        assert summary.header["attributes"] == {"customer": "c-2", "big": True, "stage": "paid"}
        assert "input" not in summary.header  # a summary; get() reads it whole
        assert wf.get("order", "o1").header["input"]["customer"] == "c-2"


def test_attributes_that_cannot_be_kept_suspend_the_instance_naming_them() -> None:
    app = _app()
    with TestDriver(app) as driver:
        driver.workflows.start("bad", id="t", input="type")
        driver.workflows.start("bad", id="l", input="long")
        for ident, words in (("t", "must be a str, int, float, bool or None"), ("l", "300")):
            view = driver.workflows.get("bad", ident)
            assert view.status == "suspended"
            assert words in view.header["error"]["message"], view.header["error"]


def test_a_filter_survives_its_trip_through_a_url() -> None:
    wanted = InstanceFilter(
        status="running",
        version=2,
        started_from_ms=5,
        started_to_ms=9,
        attributes=(("big", True), ("customer", "c-1"), ("n", 3)),
    )
    query = {k: [v] for k, v in wanted.to_query().items()}
    assert InstanceFilter.from_query(query) == wanted
    with pytest.raises(ValueError, match="version"):
        InstanceFilter.from_query({"version": ["two"]})
    # Text typed by hand (not JSON) is taken as text.
    assert InstanceFilter.from_query({"attr.customer": ["c-1"]}).attributes == (
        ("customer", "c-1"),
    )
