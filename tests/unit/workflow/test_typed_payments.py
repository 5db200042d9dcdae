"""The README's typed example (``topologies/typed_payments.py``) runs in the test driver: mypy
passing on it (tests/unit/test_typed_api.py) says nothing about whether it works."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from streamflow.testing import TestDriver

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh module each test: its ``App`` is built as the file is run."""
    spec = importlib.util.spec_from_file_location(
        "typed_payments_example", ROOT / "topologies" / "typed_payments.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # In sys.modules: the dataclass and the annotations are resolved through it.
    monkeypatch.setitem(sys.modules, module.__name__, module)
    spec.loader.exec_module(module)
    yield module


def test_payments_within_the_limit_complete_with_what_is_left(example: ModuleType) -> None:
    m = example
    with TestDriver(m.app, partitions=2) as driver:
        wf = driver.workflows
        wf.start(m.pay, id="p1", input=m.Payment("acct-1", 6_000))
        wf.start(m.pay, id="p2", input={"account": "acct-1", "amount": 1_500})  # as JSON
        assert [wf.get(m.pay, i).result for i in ("p1", "p2")] == [
            "acct-1 paid 6000, 4000 left",
            "acct-1 paid 1500, 2500 left",
        ]
        assert driver.store("accounts") == {"acct-1": 7_500}


def test_a_payment_over_the_limit_fails_at_once_and_spends_nothing(example: ModuleType) -> None:
    m = example
    with TestDriver(m.app, partitions=2) as driver:
        wf = driver.workflows
        wf.start(m.pay, id="ok", input=m.Payment("acct-2", 9_000))
        wf.start(m.pay, id="over", input=m.Payment("acct-2", 1_001))
        view = wf.get(m.pay, "over")
        assert view is not None and view.status == "failed"
        assert view.header["error"]["type"] == "OverLimit"
        assert driver.store("accounts") == {"acct-2": 9_000}
