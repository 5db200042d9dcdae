"""streamflow against its peers, Kafka Streams and Quix Streams, on four stateful rows.

Rows: a keyed count; a count over hopping windows (5 min advancing by 1 min); a stream–table
join; a stream–stream join within 1 s. Every system runs as one process with one processing
thread, exactly-once and a 100 ms commit interval, everything else at its defaults. The peers
live in environments of their own (``make bench`` builds them): Quix Streams in a venv of its
own (``$SF_QUIX_PYTHON``), Kafka Streams at the broker's version as a jar built from
``bench/kstreams`` (``$SF_KSTREAMS_JAR``).

Input, pre-filled once and read by every run (records of ~100 bytes, 10,000 keys, 6
partitions, record ``i`` keyed ``i % 10000`` and stamped ``base + i`` ms, base = now − 20 min,
so event time spans ~17 min at full size and windows open and close):

- ``records`` records on one topic (the count, hopping and stream–table rows);
- the table: the 10,000 keys, stamped ``base − 1 h`` (before every stream record);
- ``records / 2`` records on each of two topics for the stream–stream join, the right one's
  stamped 200 ms after the left one's of the same index. Keys recur every 10 s of event time,
  so within 1 s each left record joins exactly one right record.

Timing is from outside: a ``read_committed`` consumer on the run's fresh output topic measures
the time between 10 % and 90 % progress, so start-up (group join, topic creation, restores) is
excluded for every system alike. Progress is the number of output records for the joins; for
the counts, whose outputs Kafka Streams' record cache compacts, it is the sum over keys (or key
and window) of the latest count seen, which equals the records processed (× 5 windows per
record for hopping). The final figure is checked against the expected one computed offline.
Systems alternate (streamflow, Kafka Streams, Quix, streamflow, …); the table shows the median
of the rounds. The results are merged into ``bench/results.json`` (``"suite": "peers"``).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTITIONS = 6
KEYS = 10_000
HOP_SIZE_MS, HOP_ADVANCE_MS = 5 * 60_000, 60_000
WITHIN_MS = 1000
RIGHT_OFFSET_MS = 200
# Grace of the stream–stream join, the same for all three: longer than the inputs' event-time
# span (500 s at full size), so nothing is late. Quix Streams does not order records across
# topics by time (Kafka Streams and streamflow do): it fetches large batches per partition, and
# one side read far ahead of the other would make the other side's records late under a grace
# of a few minutes. The same grace for all keeps the row the same work for all.
JOIN_GRACE_MS = 10 * 60_000
ROWS = {
    "count": "keyed count, 100-byte records, 10k keys, exactly-once",
    "hopping": "hopping window count (5 min every 1 min), exactly-once",
    "table-join": "stream–table join (10k-key table), exactly-once",
    "stream-join": "stream–stream join within 1 s (2 × records/2), exactly-once",
}
SYSTEMS = {"streamflow": "streamflow", "kstreams": "Kafka Streams", "quix": "Quix Streams"}
STARTUP_TIMEOUT_S = 300
STALL_TIMEOUT_S = 60


# -- input ------------------------------------------------------------------------------------


def _value(i: int) -> bytes:
    # ~100 bytes: {"user":"u01234","n":1234567,"pad":"xxx…"}, as bench/engine_bench.py writes
    return b'{"user":"u%05d","n":%d,"pad":"%s"}' % (i % KEYS, i, b"x" * (62 - len(str(i))))


def _key(i: int) -> bytes:
    return b"u%05d" % (i % KEYS)


def create_topics(admin: AdminClient, *names: str) -> None:
    for future in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names]).values():
        future.result()


def prefill(bootstrap: str, records: int) -> dict:
    tag = uuid.uuid4().hex[:8]
    topics = {
        "input": f"peers-in-{tag}",
        "table": f"peers-table-{tag}",
        "left": f"peers-left-{tag}",
        "right": f"peers-right-{tag}",
    }
    create_topics(AdminClient({"bootstrap.servers": bootstrap, "log_level": 4}), *topics.values())
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10000,
            # Java's partitioner, so Kafka Streams and the Python systems agree on co-partitioning
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 2_000_000,
        }
    )

    def send(topic: str, key: bytes, value: bytes, ts: int) -> None:
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts)
                return
            except BufferError:
                producer.poll(0.05)

    base = int(time.time() * 1000) - 20 * 60_000
    for k in range(KEYS):
        attr = b"y" * 70
        send(
            topics["table"], _key(k), b'{"user":"u%05d","attr":"%s"}' % (k, attr), base - 3_600_000
        )
    producer.flush()  # the table is on the broker before any stream record
    for i in range(records):
        send(topics["input"], _key(i), _value(i), base + i)
    half = records // 2
    for i in range(half):
        send(topics["left"], _key(i), _value(i), base + i)
        send(topics["right"], _key(i), _value(i), base + i + RIGHT_OFFSET_MS)
    producer.flush()
    topics["base"] = base
    topics["records"] = records
    return topics


def expected(row: str, topics: dict) -> int:
    """The final progress figure of a correct run, computed from the input scheme alone."""
    records, base = topics["records"], topics["base"]
    if row == "count":
        return records
    if row == "table-join":
        return records  # every key is in the table, stamped before every stream record
    if row == "hopping":  # windows [s, s + size) with s a multiple of the advance, s <= t
        total = 0
        for i in range(records):
            t = base + i
            total += len(range(t - t % HOP_ADVANCE_MS, t - HOP_SIZE_MS, -HOP_ADVANCE_MS))
        return total
    if row == "stream-join":
        half = records // 2
        right: dict[int, list[int]] = defaultdict(list)
        for j in range(half):
            right[j % KEYS].append(base + j + RIGHT_OFFSET_MS)
        pairs = 0
        for i in range(half):
            times = right[i % KEYS]  # ascending
            t = base + i
            pairs += bisect.bisect_right(times, t + WITHIN_MS) - bisect.bisect_left(
                times, t - WITHIN_MS
            )
        return pairs
    raise ValueError(row)


# -- the outside consumer's view of progress --------------------------------------------------

_LONG = struct.Struct(">q")


def _count_progress(key_of: Callable, count_of: Callable) -> Callable:
    """Sum over keys of the latest count: one update adds what it adds to its key's count."""
    latest: dict = {}
    state = [0]

    def feed(msgs: list) -> int:
        for m in msgs:
            k, n = key_of(m), count_of(m)
            state[0] += n - latest.get(k, 0)
            latest[k] = n
        return state[0]

    return feed


def _join_progress() -> Callable:
    state = [0]

    def feed(msgs: list) -> int:
        state[0] += len(msgs)
        return state[0]

    return feed


def _quix_window(m: object) -> tuple:
    v = json.loads(m.value())  # type: ignore[attr-defined]
    return (m.key(), v["start"]), v["value"]  # type: ignore[attr-defined]


def progress_meter(system: str, row: str) -> Callable:
    """How each system's output topic is read (formats in peers_streamflow.py, peers_quix.py
    and kstreams/…/PeerBench.java)."""
    if row in ("table-join", "stream-join"):
        return _join_progress()
    raw_key = lambda m: m.key()  # noqa: E731 - windowed keys: key and window in the raw bytes
    if system == "kstreams":  # counts as 8-byte longs (TimeWindowedSerde keys for hopping)
        return _count_progress(raw_key, lambda m: _LONG.unpack(m.value())[0])
    if system == "quix" and row == "hopping":  # {"start", "end", "value"} under the plain key
        cache: dict = {}

        def key_of(m: object) -> tuple:
            cache["kv"] = _quix_window(m)
            return cache["kv"][0]

        return _count_progress(key_of, lambda m: cache["kv"][1])
    return _count_progress(raw_key, lambda m: int(m.value()))  # a JSON int


# -- one run ----------------------------------------------------------------------------------


def _command(system: str, args: argparse.Namespace) -> list[str]:
    if system == "streamflow":
        return [sys.executable, str(HERE / "peers_streamflow.py")]
    if system == "quix":
        return [args.quix_python, str(HERE / "peers_quix.py")]
    return ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-jar", args.kstreams_jar]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s: how every system under test is stopped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_one(system: str, row: str, topics: dict, args: argparse.Namespace) -> dict:
    bootstrap, records = args.bootstrap, topics["records"]
    tag = uuid.uuid4().hex[:8]
    app_id = f"peers-{system}-{row}-{tag}"
    out = f"{app_id}-out"
    create_topics(AdminClient({"bootstrap.servers": bootstrap, "log_level": 4}), out)
    if row == "stream-join":
        inputs = [topics["left"], topics["right"], str(JOIN_GRACE_MS)]
    elif row == "table-join":
        inputs = [topics["input"], topics["table"]]
    else:
        inputs = [topics["input"]]
    want = expected(row, topics)
    # input records per unit of progress: 1/5 for hopping (5 windows per record), 2 for the
    # stream–stream join (a left and a right record per output); the table's records are not
    # counted (loaded before the timed part)
    per_progress = records / want
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{app_id}-watch",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(out, p, 0) for p in range(PARTITIONS)])
    feed = progress_meter(system, row)
    state_dir = tempfile.mkdtemp(prefix=f"peers-{system}-")
    log_path = Path(state_dir) / "process.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*_command(system, args), bootstrap, app_id, state_dir, row, out, *inputs],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    samples: list[tuple[float, int]] = []  # (when, progress) after each batch read
    done = 0
    started = last_progress = time.monotonic()
    failure = None
    try:
        while done < want:
            msgs = [m for m in consumer.consume(10_000, 0.2) if not m.error()]
            now = time.monotonic()
            if msgs:
                before, done = done, feed(msgs)
                samples.append((now, done))
                if done > before:
                    last_progress = now
            if proc.poll() is not None:
                failure = f"process exited with {proc.returncode}"
                break
            if done == 0 and now - started > STARTUP_TIMEOUT_S:
                failure = "no output at all"
                break
            if done and now - last_progress > STALL_TIMEOUT_S:
                failure = f"stalled at {done:,} of {want:,}"
                break
        # Anything beyond the expected figure would be a duplicate or a wrong result.
        deadline = time.monotonic() + 2
        while failure is None and time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(10_000, 0.2) if not m.error()]
            if msgs:
                done = feed(msgs)
        if failure is None and done != want:
            failure = f"{done:,} ≠ expected {want:,}"
        rss = _peak_rss_mb(proc.pid)
    finally:
        consumer.close()
        stop_process(proc)
        log.close()
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    shutil.rmtree(state_dir, ignore_errors=True)
    # Between the 10 % and 90 % marks of what came out: of the expected figure on a correct run,
    # of the final one otherwise (the check column then says so), in input records per second.
    target = min(done, want)
    p10 = next((x for x in samples if x[1] >= 0.1 * target), None)
    p90 = next((x for x in samples if x[1] >= 0.9 * target), None)
    rate = None
    if p10 and p90 and p90[0] > p10[0]:
        rate = (p90[1] - p10[1]) / (p90[0] - p10[0]) * per_progress
    if failure and tail:
        failure += " | " + " / ".join(tail)[-300:]
    return {"records_per_s": rate, "check": failure or "ok", "peak_rss_mb": rss}


# -- table and results ------------------------------------------------------------------------


def summarize(results: dict, rows: list[str], systems: list[str], records: int) -> list[dict]:
    out = []
    for row in rows:
        for system in systems:
            runs = results.get((row, system), [])
            rates = [r["records_per_s"] for r in runs if r["records_per_s"] is not None]
            checks = sorted({r["check"] for r in runs} - {"ok"})
            rss = [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] is not None]
            out.append(
                {
                    "suite": "peers",
                    "row": row,
                    "workload": ROWS[row],
                    "system": SYSTEMS[system],
                    "records": records,
                    "records_per_s": round(statistics.median(rates)) if rates else None,
                    "rounds": [None if r is None else round(r) for r in rates],
                    "check": "; ".join(checks) if checks else "ok",
                    "p50_ms": None,
                    "p99_ms": None,
                    "peak_rss_mb": max(rss) if rss else None,
                }
            )
    for row in rows:
        mine = next((r for r in out if r["row"] == row and r["system"] == "streamflow"), None)
        for r in out:
            if r["row"] == row and mine and mine["records_per_s"] and r["records_per_s"]:
                r["streamflow_ratio"] = round(mine["records_per_s"] / r["records_per_s"], 2)
    return out


def print_table(rows: list[dict]) -> None:
    header = ("row", "system", "records/s", "rounds", "streamflow ÷", "peak RSS MB", "check")
    table = [
        (
            r["row"],
            r["system"],
            "—" if r["records_per_s"] is None else f"{r['records_per_s']:,}",
            " ".join(f"{x:,}" for x in r["rounds"]) or "—",
            "" if r["system"] == "streamflow" else f"{r.get('streamflow_ratio', '—')}×",
            "—" if r["peak_rss_mb"] is None else str(r["peak_rss_mb"]),
            r["check"],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=True)]
    for line in (header, tuple("-" * w for w in widths), *table):
        cells = [
            str(c).ljust(w) if i in (0, 1, 6) else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def merge_results(rows: list[dict]) -> Path:
    path = HERE / "results.json"
    old = json.loads(path.read_text()) if path.exists() else []
    done = {(r["row"], r["system"]) for r in rows}
    kept = [r for r in old if r.get("suite") != "peers" or (r.get("row"), r["system"]) not in done]
    path.write_text(json.dumps(kept + rows, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {','.join(ROWS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=",".join(SYSTEMS))
    parser.add_argument(
        "--quix-python",
        default=os.environ.get("SF_QUIX_PYTHON", str(ROOT / ".cache/bench-quix-venv/bin/python")),
    )
    parser.add_argument(
        "--kstreams-jar",
        default=os.environ.get("SF_KSTREAMS_JAR", str(HERE / "kstreams/target/kstreams-bench.jar")),
    )
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    systems = [s for s in args.systems.split(",") if s]
    for name, known in (("row", ROWS), ("system", SYSTEMS)):
        for x in rows if name == "row" else systems:
            if x not in known:
                parser.error(f"unknown {name} {x!r}: choose from {', '.join(known)}")
    print(
        f"pre-filling {args.records:,} records (+ table, + 2 × {args.records // 2:,}) …", flush=True
    )
    topics = prefill(args.bootstrap, args.records)
    results: dict = defaultdict(list)
    for n in range(args.rounds):
        for row in rows:
            for system in systems:
                r = run_one(system, row, topics, args)
                results[(row, system)].append(r)
                rate = "—" if r["records_per_s"] is None else f"{r['records_per_s']:,.0f}/s"
                print(
                    f"  round {n + 1} {row:<11} {SYSTEMS[system]:<13} {rate:>11}  {r['check']}",
                    flush=True,
                )
    summary = summarize(results, rows, systems, args.records)
    print()
    print_table(summary)
    print(f"\nwrote {merge_results(summary)}")


if __name__ == "__main__":
    main()
