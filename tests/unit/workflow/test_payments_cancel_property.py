"""Property: whatever the cancel points and transient failures, the payments saga conserves money
and no account changes once every transfer reports a final status.

Driven through the in-process driver (real RocksDB stores, real step threads), with time moved
by hand: cancels land before a transfer starts, while its step attempts run (starts and cancels
are piped without waiting for the attempts: ledger calls take a few milliseconds), while it
waits for its approval, in retry backoffs of any step (failures are injected per attempt),
between steps, and after it ended.
The truth is recomputed from each transfer's receipt alone: a ``completed`` receipt moved
amount + fee, anything else moved nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamflow.testing import TestDriver
from streamflow.workflow.messages import Cancel, Start

ROOT = Path(__file__).resolve().parents[3]
DEPOSITS = {"alice": 30_000, "bob": 2_000, "carol": 500}
TRANSFER_FIELDS = ("source", "target", "amount")


def _payments():
    spec = importlib.util.spec_from_file_location(
        "payments_property", ROOT / "topologies" / "payments.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["payments_property"] = module
    spec.loader.exec_module(module)
    return module


PAYMENTS = _payments()

transfer = st.fixed_dictionaries(
    {
        "source": st.sampled_from(sorted(DEPOSITS)),
        "target": st.sampled_from(sorted(DEPOSITS)),
        "amount": st.integers(1, 15_000),
        "cancel_at": st.one_of(st.none(), st.integers(-1, 12)),
        "approve_at": st.integers(0, 12),
        "while_running": st.booleans(),
    }
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    transfers=st.lists(transfer, min_size=1, max_size=6),
    failure_rate=st.sampled_from([0.0, 0.2, 0.4]),
)
def test_cancels_and_transient_failures_conserve_money(transfers, failure_rate) -> None:
    m = PAYMENTS
    m.FAILURE_RATE = 0.0
    m.LEDGER_LATENCY = 0.0
    with TestDriver(m.app, partitions=3) as driver:
        wf = driver.workflows
        for account, deposit in DEPOSITS.items():
            wf.start(
                m.open_account, id=f"open-{account}", input={"account": account, "deposit": deposit}
            )
        assert driver.store("accounts") == DEPOSITS
        m.FAILURE_RATE = failure_rate
        m.LEDGER_LATENCY = 0.003  # attempts are still running when the next event comes
        events = m.app.workflows.events_topic(m.transfer)
        ids = [f"t{i}" for i in range(len(transfers))]
        # Tick -1: cancels before the start (dead-lettered: no such instance yet).
        for tid, t in zip(ids, transfers, strict=True):
            if t["cancel_at"] == -1:
                wf.cancel(m.transfer, tid)
        for tick in range(13):
            for tid, t in zip(ids, transfers, strict=True):
                if tick == 0:
                    start = Start(tid, {"id": tid, **{k: t[k] for k in TRANSFER_FIELDS}})
                    driver.pipe(events, tid, start.to_json(), settle=False)
                if t["approve_at"] == tick:
                    wf.signal(m.transfer, tid, "approved")
                if t["cancel_at"] == tick:
                    driver.pipe(events, tid, Cancel(tid).to_json(), settle=not t["while_running"])
            driver.advance_time(70)  # lands inside the ledger's 50 ms-doubling backoffs
        for _ in range(200):
            if all(wf.get(m.transfer, tid).done for tid in ids):
                break
            driver.advance_time(1_000)
        m.FAILURE_RATE = 0.0
        m.LEDGER_LATENCY = 0.0
        driver.settle(timeout=60)
        views = {tid: wf.get(m.transfer, tid) for tid in ids}
        # Large transfers whose approval never came (cancel_at None, approve later) may wait.
        ended = {tid: v for tid, v in views.items() if v.done}
        balances = driver.store("accounts")
        assert sum(balances.values()) == sum(DEPOSITS.values())
        expected = dict(DEPOSITS)
        expected.setdefault("fees", 0)
        for tid, t in zip(ids, transfers, strict=True):
            view = views[tid]
            if view.status == "completed" and view.result.status == "completed":
                fee = m.fee_for(t["amount"])
                expected[t["source"]] -= t["amount"] + fee
                expected[t["target"]] += t["amount"]
                expected["fees"] += fee
        if len(ended) == len(ids):
            assert {k: v for k, v in balances.items() if v or k in DEPOSITS} == {
                k: v for k, v in expected.items() if v or k in DEPOSITS
            }
            for view in ended.values():
                assert view.status in ("completed", "cancelled", "compensated", "failed")
                if view.status == "failed":  # the fraud check failed for good: nothing moved
                    assert view.header["error"]["type"] in ("ConnectionError", "StepFailed")
            # Nothing moves after every transfer reported a final status.
            driver.advance_time(3_600_000)
            assert driver.store("accounts") == balances
            assert all(wf.get(m.transfer, tid).header == ended[tid].header for tid in ids)
            assert [
                v for v in driver.store("transfer-timers").values() if v["timer"] != "retention"
            ] == []
