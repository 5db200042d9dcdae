"""The payments saga through the in-process driver, time moved by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from streamflow.testing import TestDriver

ROOT = Path(__file__).resolve().parents[3]


def _payments():
    spec = importlib.util.spec_from_file_location(
        "payments_example", ROOT / "topologies" / "payments.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["payments_example"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def payments():
    module = _payments()
    with TestDriver(module.app, partitions=3) as driver:
        wf = driver.workflows
        for account, deposit in {"alice": 50_000, "bob": 1_000}.items():
            wf.start(
                module.open_account,
                id=f"open-{account}",
                input={"account": account, "deposit": deposit},
            )
        yield module, driver, wf


def test_small_transfer_completes_and_moves_money_once(payments) -> None:
    m, driver, wf = payments
    wf.start(m.transfer, id="t1", input=m.Transfer("t1", "alice", "bob", 500))
    view = wf.get(m.transfer, "t1")
    assert view.status == "completed"
    assert vars(view.result) == {"transfer_id": "t1", "status": "completed", "fee": 5}
    assert driver.store("accounts") == {"alice": 50_000 - 505, "bob": 1_500, "fees": 5}


def test_duplicate_start_is_idempotent(payments) -> None:
    m, driver, wf = payments
    for _ in range(3):
        wf.start(m.transfer, id="t1", input=m.Transfer("t1", "alice", "bob", 500))
    assert driver.store("accounts")["bob"] == 1_500


def test_short_funds_compensate_the_fee(payments) -> None:
    m, driver, wf = payments
    wf.start(m.transfer, id="t2", input=m.Transfer("t2", "bob", "alice", 5_000))
    view = wf.get(m.transfer, "t2")
    assert view.status == "compensated"
    assert view.header["error"]["type"] == "InsufficientFunds"
    assert driver.store("accounts") == {"alice": 50_000, "bob": 1_000}  # fee refunded


def test_large_transfer_waits_for_approval_signal_sent_before_or_after(payments) -> None:
    m, driver, wf = payments
    wf.start(m.transfer, id="big", input=m.Transfer("big", "alice", "bob", 20_000))
    assert wf.get(m.transfer, "big").status == "running"
    driver.advance_time(3_600_000)
    assert wf.get(m.transfer, "big").status == "running"
    wf.signal(m.transfer, "big", "approved")
    assert wf.get(m.transfer, "big").status == "completed"


def test_approval_times_out_after_two_days(payments) -> None:
    m, driver, wf = payments
    wf.start(m.transfer, id="slow", input=m.Transfer("slow", "alice", "bob", 20_000))
    driver.advance_time(2 * 86_400_000 - 1)
    assert wf.get(m.transfer, "slow").status == "running"
    driver.advance_time(1)
    view = wf.get(m.transfer, "slow")
    assert view.status == "completed" and view.result.status == "expired"


def test_cancel_while_waiting_runs_compensations(payments) -> None:
    m, driver, wf = payments
    wf.start(m.transfer, id="c1", input=m.Transfer("c1", "alice", "bob", 20_000))
    wf.cancel(m.transfer, "c1")
    view = wf.get(m.transfer, "c1")
    assert view.status == "cancelled"
    assert driver.store("accounts") == {"alice": 50_000, "bob": 1_000}


def test_full_replay_from_the_journal_gives_the_same_outcomes(monkeypatch) -> None:
    """With no coroutine cache every event replays the workflow from its journal."""
    from streamflow.workflow import orchestrator, transition

    monkeypatch.setattr(transition, "CACHE_SIZE", 0)
    monkeypatch.setattr(orchestrator, "JOURNAL_CACHE_SIZE", 0)
    m = _payments()
    with TestDriver(m.app, partitions=2) as driver:
        wf = driver.workflows
        wf.start(m.open_account, id="open-a", input={"account": "a", "deposit": 10_000})
        wf.start(m.transfer, id="ok", input=m.Transfer("ok", "a", "b", 1_000))
        wf.start(m.transfer, id="short", input=m.Transfer("short", "b", "a", 5_000))
        wf.start(m.transfer, id="big", input=m.Transfer("big", "a", "b", 12_000))
        wf.signal(m.transfer, "big", "approved")
        assert [wf.get(m.transfer, i).status for i in ("ok", "short", "big")] == [
            "completed",
            "compensated",
            "compensated",
        ]
        assert driver.store("accounts") == {"a": 10_000 - 1_010, "b": 1_000, "fees": 10}
