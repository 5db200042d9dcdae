"""Engine throughput benchmark: the raw confluent-kafka loop (the floor) against streamflow.

Each row runs in its own process (so peak RSS is that system's own) over the same pre-produced
input: N records of ~100 bytes on 6 partitions, 10,000 distinct keys. The clock starts at the
first record processed and stops when the last one is, so group joins and restores are excluded
for every row alike. Prints nothing but JSON on its last line; ``bench/run.py`` makes the table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6
KEYS = 10_000


def make_input(bootstrap: str, records: int) -> str:
    topic = f"bench-in-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10000,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    for i in range(records):
        # ~100 bytes: {"user":"u01234","n":1234567,"pad":"xxx…"}
        value = b'{"user":"u%05d","n":%d,"pad":"%s"}' % (i % KEYS, i, b"x" * (62 - len(str(i))))
        while True:
            try:
                producer.produce(topic, value, b"u%05d" % (i % KEYS))
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    return topic


def _rss_mb() -> float:
    """This process' peak RSS (VmHWM: unlike ru_maxrss it does not inherit the parent's peak)."""
    with open("/proc/self/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_floor(bootstrap: str, topic: str, records: int) -> dict:
    """consume → produce with no framework: the rate no Python processor on this box can beat."""
    out = f"{topic}-floor-out"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(out, PARTITIONS, 1)])[out].result()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    # The same client settings and GC treatment the worker gets, so the floor is a fair one.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "batch.num.messages": 10000,
        }
    )
    consumer.subscribe([topic])
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    done, start = 0, None
    produce = producer.produce
    while done < records:
        # What is fetched already, without waiting for a full batch (consume() with a timeout
        # blocks until the batch fills); block only when nothing is there, as the worker does.
        msgs = consumer.consume(5000, 0)
        if not msgs:
            first = consumer.poll(0.1)
            msgs = [first] if first is not None else []
        if msgs and start is None:
            start = time.perf_counter()
        for m in msgs:
            try:
                produce(out, m.value(), m.key())
            except BufferError:
                producer.poll(0.05)
                produce(out, m.value(), m.key())
        done += len(msgs)
        producer.poll(0)
    producer.flush()
    elapsed = time.perf_counter() - start
    consumer.close()
    return {"records_per_s": records / elapsed, "elapsed_s": elapsed}


def run_streamflow(bootstrap: str, topic: str, records: int, workload: str, guarantee: str) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from streamflow import App
    from streamflow.runtime.worker import Worker

    app = App(
        f"bench-{uuid.uuid4().hex[:8]}",
        bootstrap=bootstrap,
        guarantee=guarantee,
        state_dir=tempfile.mkdtemp(prefix="sf-bench-"),
    )
    source = app.topic(topic)
    out = app.topic(f"{topic}-{app.name}-out", partitions=PARTITIONS)
    stream = app.stream(source)
    if workload == "map":
        stream.map(lambda v: {"user": v["user"], "n2": v["n"] * 2}).to(out)
    else:
        stream.count("counts").to(out)
    worker = Worker(app.topology, app.config, app.dead_letter_topic)
    marks: dict[str, float] = {}

    def watch() -> None:
        # Wakes rarely: every wake-up takes the GIL from the worker it is measuring.
        while worker.processed == 0:
            time.sleep(0.005)
        marks["start"] = time.perf_counter()
        while worker.processed < records:
            time.sleep(0.025)
        marks["end"] = time.perf_counter()
        worker.stop()

    threading.Thread(target=watch, daemon=True).start()
    worker.run(install_signal_handlers=False)
    elapsed = marks["end"] - marks["start"]
    return {
        "records_per_s": records / elapsed,
        "elapsed_s": elapsed,
        "commits": worker.cycle.commits,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--row", required=True, choices=["floor", "map", "count-eos", "count-alos"])
    args = parser.parse_args()
    if args.row == "floor":
        result = run_floor(args.bootstrap, args.topic, args.records)
    elif args.row == "map":
        result = run_streamflow(args.bootstrap, args.topic, args.records, "map", "exactly_once")
    else:
        guarantee = "exactly_once" if args.row == "count-eos" else "at_least_once"
        result = run_streamflow(args.bootstrap, args.topic, args.records, "count", guarantee)
    result["peak_rss_mb"] = round(_rss_mb(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
