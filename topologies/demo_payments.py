"""`make demo`, part two: the payments saga at scale on a real broker, with a worker SIGKILLed.

Opens 100 accounts, sends 5,000 transfers (a third of them large enough to need an approval
signal), lets 5 % of step attempts fail transiently, kills one of the two workers halfway,
waits for every transfer to finish, and checks the books against a reference computed here.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _balances(bootstrap: str, topic: str) -> dict[str, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    parts = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(parts)])
    latest: dict[str, int] = {}
    eof: set[int] = set()
    while len(eof) < parts:
        for msg in consumer.consume(10_000, 1.0):
            error, partition, key, value = msg.error(), msg.partition(), msg.key(), msg.value()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    eof.add(partition)
                continue
            if key is None or value is None:
                # An account is never deleted, so its changelog holds no tombstone: one here
                # means the books are not what this check assumes.
                raise RuntimeError(f"{topic}: a record without a key or value at {msg.offset()}")
            latest[key.decode()] = orjson.loads(value)
    consumer.close()
    return latest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--transfers", type=int, default=5_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--state-root", type=Path, default=Path(".state/demo-payments"))
    args = parser.parse_args()

    env = {"PAYMENTS_APP": f"payments-demo-{uuid.uuid4().hex[:6]}", "PAYMENTS_FAILURE_RATE": "0.05"}
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    import payments  # reads PAYMENTS_APP as it is imported

    app = payments.app
    client = app.client(args.bootstrap)
    shutil.rmtree(args.state_root, ignore_errors=True)
    args.state_root.mkdir(parents=True)

    def worker(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamflow",
                "run",
                str(HERE / "payments.py"),
                "--bootstrap",
                args.bootstrap,
                "--state-dir",
                str(args.state_root / f"w{i}"),
            ],
            env={**os.environ, **env},
            stdout=open(args.state_root / f"w{i}.log", "ab"),
            stderr=subprocess.STDOUT,
        )

    workers = [worker(0), worker(1)]
    try:
        time.sleep(4)  # topics created, group joined
        opening = 20_000
        accounts = [f"acct-{i:03d}" for i in range(args.accounts)]
        for account in accounts:
            client.start(
                "open_account", id=f"open-{account}", input={"account": account, "deposit": opening}
            )
        rng = random.Random(7)
        transfers: list[payments.Transfer] = []
        for i in range(args.transfers):
            source, target = rng.sample(accounts, 2)
            amount = rng.choice(
                [rng.randrange(1, 3_000), rng.randrange(1, 3_000), rng.randrange(10_001, 15_000)]
            )
            transfers.append(payments.Transfer(f"t-{i:05d}", source, target, amount))
        print(
            f"sending {len(transfers):,} transfers among {len(accounts)} accounts "
            "(5 % of step attempts fail; large ones wait for an approval signal) …",
            flush=True,
        )
        started = time.monotonic()
        half = len(transfers) // 2
        for first_half, part in ((True, transfers[:half]), (False, transfers[half:])):
            client.start_many("transfer", [(t.id, t) for t in part])
            for t in part:
                if t.amount > 10_000:  # large transfers wait for an approval
                    client.signal("transfer", t.id, "approved")
            if first_half:
                time.sleep(1)
                workers[1].send_signal(signal.SIGKILL)
                workers[1].wait()
                print("SIGKILLed worker 2 halfway; restarting it", flush=True)
                workers[1] = worker(1)
        deadline = time.monotonic() + 300
        while True:
            views = {v.id: v for v in client.list("transfer", full=True)}
            if sum(v.done for v in views.values()) >= len(transfers) or time.monotonic() > deadline:
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)

    statuses = Counter(v.status for v in views.values())
    receipts = Counter(v.result.status for v in views.values() if v.status == "completed")
    expected = {a: opening for a in accounts}
    fees = 0
    for t in transfers:
        view = views.get(t.id)
        if view is not None and view.status == "completed" and view.result.status == "completed":
            expected[t.source] -= t.amount + view.result.fee
            expected[t.target] += t.amount
            fees += view.result.fee
    expected["fees"] = fees
    balances = _balances(args.bootstrap, f"{env['PAYMENTS_APP']}-accounts-changelog")
    conserved = sum(balances.values()) == opening * len(accounts)
    exact = balances == expected
    done = sum(statuses[s] for s in ("completed", "compensated", "failed"))
    print(f"transfers finished   {done:>8,} of {len(transfers):,}")
    print(
        f"  completed          {statuses['completed']:>8,}   "
        f"({receipts['completed']:,} paid, {receipts['insufficient_funds']:,} refused for funds)"
    )
    print(f"  compensated        {statuses['compensated']:>8,}   (principal short: fee refunded)")
    print(f"  failed             {statuses['failed']:>8,}")
    print(f"money conserved      {conserved!s:>8}   ({sum(balances.values()):,} cents)")
    print(f"balances exact       {exact!s:>8}   (vs. a reference from statuses alone)")
    print(f"lowest balance       {min(balances.values()):>8,}")
    print(
        f"time / rate          {elapsed:>8.1f} s   {len(transfers) / elapsed:,.0f} transfers/s "
        "(2 workers, one SIGKILLed)"
    )
    ok = conserved and exact and done == len(transfers) and min(balances.values()) >= 0
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
