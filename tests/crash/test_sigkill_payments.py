"""Transfers among 100 accounts while workers are SIGKILLed and a third of the transfers are
cancelled mid-flight: the books still balance.

Steps wait as real calls do (ledger 20 ms, fraud scoring 50 ms) and fail at random (transient
errors injected into 10 % of attempts, some after the entity write); two workers run the
payments example, and one of them is SIGKILLed and restarted every few seconds, so attempts are
killed while they run and commands finished out of order are delivered again. The reference is
computed outside streamflow, from each transfer's input and final status alone.

`make test` runs 2,000 transfers; `make chaos` runs 10,000 (``SF_CRASH_TRANSFERS``). Every
completed transfer credits the one ``fees`` account, and one account takes one attempt at a
time, so that account alone needs ~20 ms per transfer.

The cancel storm: a random third of the transfers get a cancel a few dozen transfers after
their start, so cancels land before the start is read, in retry backoffs, during approval
waits, while debits run and after the end. A cancelled transfer must leave no trace in the
books (its compensations undo exactly what moved), and nothing may move after a transfer
reports a final status.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from tests.engine_helpers import REPO, WorkerProcess, decoded_by_key, load_app_with_env, read_topic

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "topologies" / "payments.py"
ACCOUNTS = 100
OPENING = 20_000
TRANSFERS = int(os.environ.get("SF_CRASH_TRANSFERS", "2000"))


def _send(producer: Producer, topic: str, instance_id: str, event: dict) -> None:
    while True:
        try:
            producer.produce(topic, orjson.dumps(event), instance_id.encode())
            return
        except BufferError:
            producer.poll(0.05)


def test_sigkill_during_transfers_conserves_money_and_moves_it_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        "PAYMENTS_APP": f"pay-{run}",
        "PAYMENTS_FAILURE_RATE": "0.1",
        "PAYMENTS_LEDGER_LATENCY": "0.02",
        "PAYMENTS_SCORING_LATENCY": "0.05",
    }
    app = load_app_with_env(APP_FILE, env)
    client = app.client(kafka_bootstrap)
    events = lambda wf: app.workflows.events_topic(wf)  # noqa: E731
    workers = [
        WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / f"w{i}", env, tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    try:
        producer = Producer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "enable.idempotence": True,
            }
        )
        accounts = [f"acct-{i:03d}" for i in range(ACCOUNTS)]
        for account in accounts:
            _send(
                producer,
                events("open_account"),
                f"open-{account}",
                {
                    "type": "start",
                    "id": f"open-{account}",
                    "input": {"account": account, "deposit": OPENING},
                },
            )
        producer.flush(30)

        rng = random.Random(42)
        transfers = []
        for i in range(TRANSFERS):
            source, target = rng.sample(accounts, 2)
            amount = rng.choice(
                [rng.randrange(1, 3_000), rng.randrange(1, 3_000), rng.randrange(10_001, 15_000)]
            )  # a third need approval
            transfers.append(
                {"id": f"t-{i:05d}", "source": source, "target": target, "amount": amount}
            )

        cancelled = set(rng.sample([t["id"] for t in transfers], TRANSFERS // 3))

        def produce_transfers_and_cancels() -> None:
            p = Producer(
                {
                    "bootstrap.servers": kafka_bootstrap,
                    "partitioner": "murmur2_random",
                    "linger.ms": 5,
                    "enable.idempotence": True,
                }
            )
            due: list[tuple[int, str]] = []
            delays = random.Random(7)
            for n, t in enumerate(transfers):
                _send(p, events("transfer"), t["id"], {"type": "start", "id": t["id"], "input": t})
                if t["amount"] > 10_000:
                    _send(
                        p,
                        events("transfer"),
                        t["id"],
                        {"type": "signal", "id": t["id"], "name": "approved", "payload": None},
                    )
                if t["id"] in cancelled:
                    due.append((n + delays.randrange(0, 60), t["id"]))
                for at, instance in [d for d in due if d[0] <= n]:
                    _send(p, events("transfer"), instance, {"type": "cancel", "id": instance})
                    due.remove((at, instance))
                if n % (TRANSFERS // 20) == TRANSFERS // 20 - 1:
                    p.flush(30)
                    time.sleep(0.5)
            for _, instance in due:
                _send(p, events("transfer"), instance, {"type": "cancel", "id": instance})
            p.flush(30)

        feeder = threading.Thread(target=produce_transfers_and_cancels)
        feeder.start()
        kills = 0
        killer = random.Random(3)
        while feeder.is_alive() or kills < 5:
            time.sleep(killer.uniform(2.0, 4.0))
            victim = workers[kills % 2]
            victim.kill()
            kills += 1
            victim.start()
        feeder.join()

        deadline = time.monotonic() + max(300, TRANSFERS * 0.06)  # ~25 ms per fee credit
        while True:
            views = {v.id: v for v in client.list("transfer", full=True)}
            finished = sum(v.done for v in views.values())
            if finished == TRANSFERS or time.monotonic() > deadline:
                break
            time.sleep(3)
    finally:
        for w in workers:
            w.terminate()

    statuses = Counter(v.status for v in views.values())
    print(f"transfers by status: {dict(statuses)}, {kills} kills, {len(cancelled)} cancels sent")
    assert finished == TRANSFERS, f"unfinished transfers: {statuses}"
    assert set(statuses) <= {"completed", "compensated", "failed", "cancelled"}, statuses
    assert statuses["completed"] > TRANSFERS // 4 and statuses["compensated"] > 0
    assert statuses["cancelled"] > TRANSFERS // 10, statuses
    assert not [i for i, v in views.items() if v.status == "cancelled" and i not in cancelled]

    expected = {a: OPENING for a in accounts}
    fees = 0
    for t in transfers:
        view = views[t["id"]]
        if view.status == "completed" and view.result.status == "completed":
            fee = view.result.fee
            expected[t["source"]] -= t["amount"] + fee
            expected[t["target"]] += t["amount"]
            fees += fee
        else:  # compensated (short funds) or failed before moving money: no net effect
            assert view.status != "failed" or not any(
                e["kind"] == "step" and e["name"] in ("debit", "credit") and e["status"] == "done"
                for e in view.entries
            ), f"{t['id']} failed after moving money"
    expected["fees"] = fees

    changelog = f"{env['PAYMENTS_APP']}-accounts-changelog"
    balances = {k: v[-1] for k, v in decoded_by_key(read_topic(kafka_bootstrap, changelog)).items()}
    # Every transfer reported a final status and the workers are gone: had a cancelled
    # transfer's retry timer or late attempt still been pending, the books would differ from
    # the receipts below.
    assert sum(balances.values()) == ACCOUNTS * OPENING, "money is conserved"
    assert min(balances.values()) >= 0, "no balance goes negative"
    assert balances == expected, "each transfer moved money exactly once, or not at all"
    assert kills >= 5
