"""`make demo`: the order-totals example end to end on a real broker, with a worker killed mid-run.

Produces realistic orders, runs two `streamflow run` workers of topologies/order_totals.py,
SIGKILLs one halfway and restarts it, then checks the committed output against totals computed
here in plain Python, and prints a short summary.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

if TYPE_CHECKING:  # the topology's record shapes; it runs in the workers, not imported here
    from order_totals import CustomerTotals, Order

HERE = Path(__file__).resolve().parent
APP = "order-totals"
TOPICS = [
    "orders",
    "customer-totals",
    f"{APP}-by-customer-repartition",
    f"{APP}-customer-totals-changelog",
    f"{APP}.dlq",
]


class Counts(TypedDict):
    """A customer's totals without ``last_order``: what is compared with the topology's."""

    orders: int
    cents: int


def reset(bootstrap: str, state_root: Path) -> None:
    """A fresh run each time: the demo's topics, group and state dirs are removed first."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [t for t in TOPICS if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
    try:
        admin.delete_consumer_groups([APP], request_timeout=10)[APP].result()
    except Exception:  # noqa: BLE001 - absent group is the normal case
        pass
    shutil.rmtree(state_root, ignore_errors=True)
    deadline = time.monotonic() + 30
    while set(admin.list_topics(timeout=10).topics) & set(doomed) and time.monotonic() < deadline:
        time.sleep(0.5)


def make_orders(n: int, customers: int, seed: int = 2026) -> list[Order]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(customers)]  # a few big customers, a long tail
    names = [f"cust-{i:04d}" for i in range(customers)]
    chosen = rng.choices(names, weights, k=n)
    return [
        {
            "id": f"ord-{i:07d}",
            "customer": c,
            "cents": rng.randrange(199, 250_00),
            "status": rng.choices(["paid", "cancelled", "pending"], [85, 10, 5])[0],
        }
        for i, c in enumerate(chosen)
    ]


def produce(bootstrap: str, orders: list[Order]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    for order in orders:
        while True:
            try:
                producer.produce("orders", orjson.dumps(order), order["id"].encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


class TotalsReader:
    """Follows ``customer-totals`` with read_committed: what a downstream consumer would see."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"demo-reader-{time.time()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        self._consumer.subscribe(["customer-totals"])
        self.latest: dict[str, CustomerTotals] = {}
        self.updates = 0

    def poll(self, seconds: float) -> None:
        for msg in self._consumer.consume(10_000, seconds):
            if msg.error():
                continue
            key, value = msg.key(), msg.value()
            if key is None or value is None:
                # The topology only ever writes totals: a record without one is not its own.
                raise RuntimeError(
                    f"customer-totals: a record without a key or value at {msg.offset()}"
                )
            self.latest[key.decode()] = orjson.loads(value)
            self.updates += 1

    def close(self) -> None:
        self._consumer.close()


def start_worker(bootstrap: str, state_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamflow",
            "run",
            str(HERE / "order_totals.py"),
            "--bootstrap",
            bootstrap,
            "--state-dir",
            str(state_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--state-root", type=Path, default=Path(".state/demo"))
    args = parser.parse_args()

    reset(args.bootstrap, args.state_root)
    args.state_root.mkdir(parents=True)
    orders = make_orders(args.orders, args.customers)
    print(f"producing {len(orders):,} orders from {args.customers:,} customers …", flush=True)
    workers = [
        start_worker(args.bootstrap, args.state_root / f"w{i}", args.state_root / f"w{i}.log")
        for i in range(2)
    ]
    time.sleep(3)  # let the workers create the topics and join the group
    started = time.monotonic()
    produce(args.bootstrap, orders)
    paid = sum(1 for order in orders if order["status"] == "paid")
    reader = TotalsReader(args.bootstrap)
    while reader.updates < paid // 2:
        reader.poll(0.2)
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait()
    print("killed worker 2 with SIGKILL halfway; restarting it", flush=True)
    workers[1] = start_worker(args.bootstrap, args.state_root / "w1", args.state_root / "w1.log")
    deadline = time.monotonic() + 300
    while reader.updates < paid and time.monotonic() < deadline:
        reader.poll(0.5)
    elapsed = time.monotonic() - started
    reader.poll(3.0)  # anything beyond the expected count would be a duplicate: look for it
    reader.close()
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(60)

    truth: dict[str, Counts] = {}
    for order in orders:
        if order["status"] == "paid":
            t = truth.setdefault(order["customer"], {"orders": 0, "cents": 0})
            t["orders"] += 1
            t["cents"] += order["cents"]
    latest, updates = reader.latest, reader.updates
    got = {c: {"orders": v["orders"], "cents": v["cents"]} for c, v in latest.items()}
    ok = got == truth and updates == paid
    print(f"orders produced      {len(orders):>12,}")
    print(f"paid orders          {paid:>12,}")
    print(f"customers            {len(truth):>12,}")
    print(f"revenue              {sum(t['cents'] for t in truth.values()) / 100:>15,.2f}")
    print(f"updates published    {updates:>12,}   (exactly one per paid order: {updates == paid})")
    print(f"totals match truth   {got == truth!s:>12}")
    print(
        f"time / rate          {elapsed:>10.1f} s   {len(orders) / elapsed:,.0f} orders/s "
        "(2 workers, one SIGKILLed and restarted)"
    )
    print("demo OK" if ok else "demo FAILED: output differs from the truth")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
