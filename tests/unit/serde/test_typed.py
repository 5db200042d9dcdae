"""The one plain-value → annotated-type converter (serde/typed.py)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

import pytest

from streamflow.serde.typed import ValueMismatch, from_plain


@dataclass
class Line:
    sku: str
    qty: int
    price: float = 0.0


@dataclass
class Order:
    id: str
    lines: list[Line]
    note: str | None = None
    tags: dict[str, int] = field(default_factory=dict)
    status: Literal["open", "paid"] = "open"


@dataclass
class Refund:
    id: str
    cents: int


def test_nested_dataclasses_lists_and_dicts_are_rebuilt() -> None:
    order = from_plain(
        Order,
        {"id": "o1", "lines": [{"sku": "a", "qty": 2, "price": 3}], "tags": {"x": 1}},
    )
    assert order == Order("o1", [Line("a", 2, 3.0)], tags={"x": 1})
    assert isinstance(order.lines[0].price, float), "an int where a float is declared: a float"


def test_a_missing_field_is_named_with_its_path() -> None:
    with pytest.raises(
        ValueMismatch, match=r"order\.lines\[1\]: does not fit Line \(missing 'qty'\)"
    ):
        from_plain(Order, {"id": "o1", "lines": [{"sku": "a", "qty": 1}, {"sku": "b"}]}, "order")


def test_a_wrong_primitive_is_named_not_passed_through() -> None:
    with pytest.raises(ValueMismatch, match=r"value\.lines\[0\]\.qty: str '2' where an int"):
        from_plain(Order, {"id": "o1", "lines": [{"sku": "a", "qty": "2"}]})
    with pytest.raises(ValueMismatch, match=r"value\.status: 'shipped' is not one of"):
        from_plain(Order, {"id": "o1", "lines": [], "status": "shipped"})
    with pytest.raises(ValueMismatch, match="null where Refund is declared"):
        from_plain(Refund, None)


def test_keys_the_code_removed_are_ignored_so_old_journals_stay_readable() -> None:
    assert from_plain(Refund, {"id": "r", "cents": 5, "reason": "gone in v2"}) == Refund("r", 5)


def test_a_union_picks_the_record_whose_fields_the_value_has() -> None:
    assert from_plain(Line | Refund, {"id": "r", "cents": 1}) == Refund("r", 1)
    assert from_plain(Refund | None, None) is None
    with pytest.raises(ValueMismatch, match="fits no branch"):
        from_plain(Line | Refund, {"nothing": 1})


def test_values_of_unknown_types_and_instances_pass_as_they_are() -> None:
    when = datetime.datetime(2026, 1, 1)
    assert from_plain(datetime.datetime, when) is when
    refund = Refund("r", 1)
    assert from_plain(Refund, refund) is refund
    with pytest.raises(ValueMismatch, match="where a list is declared"):
        from_plain(list[int], {"a": 1})
