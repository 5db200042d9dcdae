"""Rebalances and failovers of real ``streamflow run`` workers, measured from outside.

For each group protocol (``classic``: client-side cooperative-sticky assignment; ``consumer``:
Kafka 4's KIP-848, assignment on the broker), under a steady load of input:

- **join**: a second worker starts; time until every task runs again, exactly once, over both;
- **leave**: that worker stops (SIGTERM); time until the first runs every task again.

Then **failover of tasks holding 1M keys** (a count over 1M distinct keys, 6 partitions, two
workers), with and without a standby replica (``--num-standbys 1``): the worker that owns task
``0_0`` is SIGKILLed; measured are the time from the kill until the survivor runs every task
(failure detection by the session timeout included) and, within it, from the survivor being
assigned the tasks until they run (the restore), with the records it restored.

"Runs" is what each worker's ``/status`` says (answered by the worker between two batches).

Usage: rebalance_bench.py --bootstrap HOST:PORT [--keys 1000000] [--rate 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTITIONS = 6
TIMEOUT_S = 180


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    def __init__(self, bootstrap: str, env: dict[str, str], state: Path, extra: dict[str, str]):
        self.port = _port()
        self.log = open(state.with_suffix(".log"), "w")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "run", str(HERE / "rebalance_app.py"),
             "--bootstrap", bootstrap, "--state-dir", str(state), "-q"],
            env={**os.environ, **env, **extra, "STREAMFLOW_HTTP_PORT": str(self.port),
                 "PYTHONPATH": str(ROOT)},
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(60)
        self.log.close()


def running(workers: list[Worker]) -> Counter:
    seen: Counter = Counter()
    for w in workers:
        s = w.status()
        for t in (s or {}).get("tasks", []):
            if t["state"] == "running":
                seen[t["task"]] += 1
    return seen


def wait_until(check, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > TIMEOUT_S:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def every_task_once(workers: list[Worker]) -> bool:
    seen = running(workers)
    return len(seen) == PARTITIONS and set(seen.values()) == {1}


class Load(threading.Thread):
    """Input at a steady rate while a rebalance happens."""

    def __init__(self, bootstrap: str, topic: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic, self.rate, self.done = topic, rate, threading.Event()

    def run(self) -> None:
        i, start = 0, time.monotonic()
        while not self.done.is_set():
            for _ in range(100):
                self.producer.produce(self.topic, b"{}", b"k%d" % (i % 10_000))
                i += 1
            self.producer.poll(0)
            ahead = i / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        self.producer.flush(30)


def _setup(bootstrap: str, tag: str) -> dict[str, str]:
    env = {
        "SF_BENCH_APP": f"rebal-{tag}",
        "SF_BENCH_INPUT": f"rebal-{tag}-in",
        "SF_BENCH_OUTPUT": f"rebal-{tag}-out",
    }
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(env[k], PARTITIONS, 1) for k in ("SF_BENCH_INPUT", "SF_BENCH_OUTPUT")]
    for future in admin.create_topics(topics).values():
        future.result()
    return env


def join_and_leave(bootstrap: str, protocol: str, rate: int, tmp: Path) -> dict:
    tag = f"{protocol}-{uuid.uuid4().hex[:6]}"
    env = _setup(bootstrap, tag)
    extra = {"STREAMFLOW_GROUP_PROTOCOL": protocol}
    first = Worker(bootstrap, env, tmp / f"{tag}-a", extra)
    load = Load(bootstrap, env["SF_BENCH_INPUT"], rate)
    second = None
    try:
        wait_until(lambda: every_task_once([first]), "the first worker running every task")
        load.start()
        time.sleep(3)
        second = Worker(bootstrap, env, tmp / f"{tag}-b", extra)
        joined = wait_until(
            lambda: every_task_once([first, second]) and bool(running([second])),
            "tasks spread over both workers",
        )
        time.sleep(3)
        started = time.monotonic()
        second.stop()  # SIGTERM: it commits, leaves the group, exits
        wait_until(lambda: every_task_once([first]), "the first worker running every task")
        left = time.monotonic() - started
        return {"join_s": round(joined, 2), "leave_s": round(left, 2)}
    finally:
        load.done.set()
        load.join(30)
        if second is not None:
            second.stop(kill=True)
        first.stop()


def failover(bootstrap: str, keys: int, standbys: int, tmp: Path) -> dict:
    tag = f"fo{standbys}-{uuid.uuid4().hex[:6]}"
    env = _setup(bootstrap, tag)
    extra = {"STREAMFLOW_NUM_STANDBYS": str(standbys)}
    workers = [Worker(bootstrap, env, tmp / f"{tag}-{n}", extra) for n in "ab"]
    try:
        wait_until(lambda: every_task_once(workers) and all(running([w]) for w in workers),
                   "both workers running")  # fmt: skip
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                             "queue.buffering.max.messages": 2_000_000})  # fmt: skip
        for i in range(keys):
            while True:
                try:
                    producer.produce(env["SF_BENCH_INPUT"], b"{}", b"key-%07d" % i)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(120)

        def processed() -> int:
            return sum(t["processed"] for w in workers for t in (w.status() or {}).get("tasks", []))

        wait_until(lambda: processed() >= keys, "every key counted")
        if standbys:

            def warm() -> bool:
                stats = [w.status() or {} for w in workers]
                lags = [sb["lag"] for s in stats for sb in s.get("standbys", [])]
                return len(lags) == PARTITIONS and max(lags) == 0

            wait_until(warm, "standbys caught up")
        victim = next(w for w in workers if any(t["task"] == "0_0" for t in w.status()["tasks"]))
        survivor = workers[1 - workers.index(victim)]
        restored_before = _restored(survivor)
        victim.stop(kill=True)
        assigned = wait_until(lambda: len((survivor.status() or {}).get("tasks", [])) == PARTITIONS,
                              "the survivor assigned every task")  # fmt: skip
        total = assigned + wait_until(
            lambda: every_task_once([survivor]), "the survivor running all"
        )
        return {
            "standbys": standbys,
            "kill_to_running_s": round(total, 2),
            "assigned_to_running_s": round(total - assigned, 2),
            "restored_records": _restored(survivor) - restored_before,
        }
    finally:
        for w in workers:
            w.stop(kill=True)


def _restored(worker: Worker) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("streamflow_restored_records_total"):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=5000, help="input records/s during rebalances")
    parser.add_argument("--skip-failover", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rebalance-"))
    rows = []
    for protocol in ("classic", "consumer"):
        row = join_and_leave(args.bootstrap, protocol, args.rate, tmp)
        print(
            f"  {protocol:<9} join {row['join_s']:6.2f} s   leave {row['leave_s']:6.2f} s",
            flush=True,
        )
        rows.append({"suite": "rebalance", "protocol": protocol, "rate": args.rate, **row})
    if not args.skip_failover:
        for standbys in (0, 1):
            row = failover(args.bootstrap, args.keys, standbys, tmp)
            print(
                f"  failover, {args.keys:,} keys, standbys={standbys}: kill -> running "
                f"{row['kill_to_running_s']:.2f} s, assigned -> running "
                f"{row['assigned_to_running_s']:.2f} s, {row['restored_records']:,} restored",
                flush=True,
            )
            rows.append({"suite": "failover", "keys": args.keys, **row})
    path = HERE / "results.json"
    old = json.loads(path.read_text()) if path.exists() else []
    written = {"rebalance"} | (set() if args.skip_failover else {"failover"})
    kept = [r for r in old if r.get("suite") not in written]
    path.write_text(json.dumps(kept + rows, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
