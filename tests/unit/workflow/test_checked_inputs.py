"""Inputs are checked where they are given, and results come back as the workflow typed them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamflow import App
from streamflow.serde.typed import ValueMismatch
from streamflow.testing import TestDriver


@dataclass
class Order:
    id: str
    qty: int


@dataclass
class Shipped:
    order: str
    boxes: int


def _app() -> App:
    app = App("checked")

    @app.workflow
    async def ship(ctx, order: Order) -> Shipped:
        return Shipped(order.id, order.qty // 10 + 1)

    return app


def test_a_start_whose_input_does_not_fit_is_refused_before_it_is_sent() -> None:
    app = _app()
    with TestDriver(app) as driver:
        with pytest.raises(ValueMismatch, match=r"ship instance 'o-bad'.*missing 'qty'"):
            driver.workflows.start("ship", id="o-bad", input={"id": "o-bad"})
        with pytest.raises(ValueMismatch, match="null where Order is declared"):
            driver.workflows.start("ship", id="o-none")
        with pytest.raises(ValueMismatch, match="o-many"):
            driver.workflows.start_many(
                "ship", [("o-ok", {"id": "o-ok", "qty": 1}), ("o-many", {})]
            )
        assert driver.messages("checked.ship.events") == []  # nothing at all was sent
        assert driver.workflows.get("ship", "o-bad") is None


def test_a_bad_start_that_reaches_the_worker_fails_the_instance_with_the_reason() -> None:
    app = _app()
    with TestDriver(app) as driver:
        # A producer that is not our client: the worker is the last line.
        driver.pipe(
            "checked.ship.events", "raw", {"type": "start", "id": "raw", "input": {"id": 1}}
        )
        view = driver.workflows.get("ship", "raw")
        assert view.status == "failed" and view.done
        assert view.header["error"]["type"] == "ValueMismatch"
        assert "qty" in view.header["error"]["message"]
        assert driver.dead_letters() == []


def test_the_result_comes_back_as_the_declared_type() -> None:
    app = _app()
    with TestDriver(app) as driver:
        driver.workflows.start("ship", id="o1", input=Order("o1", 25))
        assert driver.workflows.get("ship", "o1").result == Shipped("o1", 3)
