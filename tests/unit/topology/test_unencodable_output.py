"""A key or value its topic cannot encode is dead-lettered in plain words."""

from __future__ import annotations

from streamflow import App
from streamflow.testing import TestDriver


def test_a_key_function_that_returns_an_int_for_a_str_topic_is_explained() -> None:
    app = App("keys")
    orders = app.topic("orders")
    by_amount = app.topic("by-amount", key="str")
    app.stream(orders).key_by(lambda o: o["cents"], name="by-cents", key="json").map(
        lambda o: o
    ).to(by_amount)
    with TestDriver(app) as driver:
        driver.pipe("orders", "o-1", {"cents": 42})
        (letter,) = driver.dead_letters()
        message = dict(letter.headers())["streamflow.error"].decode()
    assert "the key for topic 'by-amount' is int 42" in message, message
    assert "key serde is 'str' and wants a str" in message
    assert "descriptor" not in message.split("(")[0]
