"""Per-customer running order totals, exactly once.

Orders arrive keyed by order id; paid orders are re-keyed by customer (through a repartition
topic, so every order of a customer meets in one task) and folded into a RocksDB store with a
changelog. Every update of a customer's totals is published to ``customer-totals``.

Run it (a broker from ``streamflow dev kafka start`` or your own):

    streamflow run topologies/order_totals.py --state-dir .state/w1
    streamflow run topologies/order_totals.py --state-dir .state/w2  # a 2nd worker: tasks rebalance

``make demo`` produces a realistic input, runs two workers and checks the result.
"""

from __future__ import annotations

from typing import TypedDict

from streamflow import App


class Order(TypedDict):
    """A record of ``orders``, as JSON: what the filter, the re-key and ``add_order`` read."""

    id: str
    customer: str
    cents: int
    status: str  # paid | cancelled | pending


class CustomerTotals(TypedDict):
    """A customer's totals, in the store and on ``customer-totals``."""

    orders: int
    cents: int
    last_order: str | None  # None only in the initial value, before the first order


app = App("order-totals")

orders = app.topic("orders", key="str", value="json", partitions=6)
totals = app.topic("customer-totals", key="str", value="json", partitions=6)


def add_order(acc: CustomerTotals, order: Order) -> CustomerTotals:
    """Counts and sums in cents: floats would drift, and replays must reproduce totals exactly."""
    return {
        "orders": acc["orders"] + 1,
        "cents": acc["cents"] + order["cents"],
        "last_order": order["id"],
    }


(
    app.stream(orders)
    .filter(lambda order: order["status"] == "paid")
    .key_by(lambda order: order["customer"], name="by-customer")
    .aggregate(
        "customer-totals",
        initial=lambda: {"orders": 0, "cents": 0, "last_order": None},
        fn=add_order,
    )
    .to(totals)
)
