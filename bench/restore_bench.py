"""Restore from a changelog, streamflow beside Kafka Streams: a 1M-key count store, fresh state.

Each system runs its keyed-count app (the peers bench's ``count`` row: store ``counts``) with a
fresh state directory against a changelog pre-filled with ``keys`` entries (6 partitions, as a
count over that many keys would have left it, in each system's own value format). Timed from
outside: from process start until a marker record sent to every input partition has come out
(``read_committed``), i.e. until every task restored and processes again. The same run with an
empty changelog gives the start-up time of the process (group join, topic checks, JVM or
interpreter); the restore time is the difference, and the rate is keys per second of it.

Usage: restore_bench.py --bootstrap HOST:PORT [--keys 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers_bench import PARTITIONS, ROOT, _command, stop_process  # noqa: E402

TIMEOUT_S = 300


def _topics(admin: AdminClient, names: list[str], compacted: bool = False) -> None:
    config = {"cleanup.policy": "compact"} if compacted else {}
    specs = [NewTopic(n, PARTITIONS, 1, config=config) for n in names]
    for future in admin.create_topics(specs).values():
        future.result()


def fill_changelog(bootstrap: str, topic: str, keys: int, system: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 2_000_000,
            "compression.type": "none",
        }
    )
    for i in range(keys):
        key = b"k%07d" % i
        # streamflow: the count as JSON; Kafka Streams: an 8-byte long (its Long serde)
        value = (
            b"%d" % (i % 1000 + 1) if system == "streamflow" else struct.pack(">q", i % 1000 + 1)
        )
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()


def run_once(bootstrap: str, system: str, keys: int, args: argparse.Namespace) -> float:
    """Seconds from process start until every partition has processed its marker."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    tag = uuid.uuid4().hex[:8]
    app_id = f"restore-{system}-{tag}"
    source, out = f"{app_id}-in", f"{app_id}-out"
    _topics(admin, [source, out])
    _topics(admin, [f"{app_id}-counts-changelog"], compacted=True)
    if keys:
        fill_changelog(bootstrap, f"{app_id}-counts-changelog", keys, system)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{app_id}-watch",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(out, p, 0) for p in range(PARTITIONS)])
    state_dir = tempfile.mkdtemp(prefix=f"restore-{system}-")
    log = open(Path(state_dir) / "process.log", "w")  # noqa: SIM115 - closed below
    markers = Producer({"bootstrap.servers": bootstrap})
    started = time.monotonic()
    proc = subprocess.Popen(
        [*_command(system, args), bootstrap, app_id, state_dir, "count", out, source],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        for p in range(PARTITIONS):
            markers.produce(source, b'{"marker":1}', b"marker-%d" % p, p)
        markers.flush()
        seen: set[int] = set()  # input partitions whose marker came out
        while len(seen) < PARTITIONS:
            for m in consumer.consume(100, 0.05):
                if not m.error() and (m.key() or b"").startswith(b"marker-"):
                    seen.add(int(m.key()[7:]))  # the output of input partition p's marker
            if proc.poll() is not None:
                raise RuntimeError(f"{system} exited with {proc.returncode}")
            if time.monotonic() - started > TIMEOUT_S:
                raise RuntimeError(f"{system}: only partitions {sorted(seen)} processed")
        return time.monotonic() - started
    finally:
        consumer.close()
        stop_process(proc)
        log.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--systems", default="streamflow,kstreams")
    parser.add_argument("--kstreams-jar", default=str(HERE / "kstreams/target/kstreams-bench.jar"))
    parser.add_argument("--quix-python", default=sys.executable)
    args = parser.parse_args()
    systems = args.systems.split(",")
    runs: dict[str, dict[str, list[float]]] = {s: {"empty": [], "full": []} for s in systems}
    for r in range(args.rounds):
        for system in systems:
            for kind, keys in (("empty", 0), ("full", args.keys)):
                took = run_once(args.bootstrap, system, keys, args)
                runs[system][kind].append(took)
                print(f"  round {r + 1} {system:<11} {kind:<5} {took:6.2f} s", flush=True)
    rows = []
    print(
        f"\nrestore of a {args.keys:,}-key count store (fresh state dir), median of {args.rounds}"
    )
    print(f"{'system':<12} {'start, empty':>13} {'start, full':>12} {'restore':>8} {'keys/s':>11}")
    for system in systems:
        empty = statistics.median(runs[system]["empty"])
        full = statistics.median(runs[system]["full"])
        restore = max(full - empty, 1e-3)
        rate = args.keys / restore
        print(f"{system:<12} {empty:>12.2f}s {full:>11.2f}s {restore:>7.2f}s {rate:>11,.0f}")
        rows.append(
            {
                "suite": "restore",
                "system": system,
                "keys": args.keys,
                "start_empty_s": round(empty, 2),
                "start_full_s": round(full, 2),
                "restore_s": round(restore, 2),
                "keys_per_s": round(rate),
                "rounds": runs[system],
            }
        )
    path = HERE / "results.json"
    old = json.loads(path.read_text()) if path.exists() else []
    kept = [r for r in old if r.get("suite") != "restore"]
    path.write_text(json.dumps(kept + rows, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
