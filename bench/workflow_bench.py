"""Workflow benchmark: completed 3-step workflows per second, and start→completion latency.

Each worker is its own `streamflow run` process, as in production. The bench process starts
instances through a plain producer and follows completions by reading the instances changelog
(read_committed), which is what a client sees. An untimed warm-up wave runs first, so that the
figures are the engine's steady state and not its start-up (assignment, restores, first
metadata and partition registrations).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

REPO = Path(__file__).resolve().parents[1]
APP_SOURCE = """
import asyncio
import os
import time
from streamflow import App

app = App(os.environ["SF_BENCH_APP"], partitions=int(os.environ["SF_BENCH_PARTITIONS"]))
SLEEP = float(os.environ.get("SF_BENCH_STEP_SLEEP", "0"))

if os.environ.get("SF_BENCH_ASYNC") == "1":
    @app.step
    async def reserve(ctx, n: int) -> int:
        await asyncio.sleep(SLEEP)
        return n + 1

    @app.step
    async def charge(ctx, n: int) -> int:
        await asyncio.sleep(SLEEP)
        return n * 2

    @app.step
    async def notify(ctx, n: int) -> int:
        await asyncio.sleep(SLEEP)
        return n - 1
else:
    @app.step
    def reserve(ctx, n: int) -> int:
        if SLEEP:
            time.sleep(SLEEP)
        return n + 1

    @app.step
    def charge(ctx, n: int) -> int:
        if SLEEP:
            time.sleep(SLEEP)
        return n * 2

    @app.step
    def notify(ctx, n: int) -> int:
        if SLEEP:
            time.sleep(SLEEP)
        return n - 1

@app.workflow
async def three_steps(ctx, n: int) -> int:
    a = await ctx.step(reserve, n)
    b = await ctx.step(charge, a)
    return await ctx.step(notify, b)
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    bootstrap: str,
    workers: int,
    instances: int,
    rate: float | None,
    warmup: int = 1000,
    partitions: int = 6,
    step_sleep: float = 0.0,
    async_steps: bool = False,
) -> dict:
    """``step_sleep`` seconds of waiting in each step (``time.sleep``, or ``asyncio.sleep`` with
    ``async_steps``): a step that calls a service, as opposed to one that only computes."""
    app_name = f"wfbench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="sf-wfbench-"))
    app_file = work / "three_steps.py"
    app_file.write_text(APP_SOURCE)
    env = {
        **os.environ,
        "SF_BENCH_APP": app_name,
        "SF_BENCH_PARTITIONS": str(partitions),
        "SF_BENCH_STEP_SLEEP": str(step_sleep),
        "SF_BENCH_ASYNC": "1" if async_steps else "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamflow",
                "run",
                str(app_file),
                "--bootstrap",
                bootstrap,
                "--state-dir",
                str(work / f"w{i}"),
            ],
            env=env,
            stdout=open(work / f"w{i}.log", "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
        )
        for i in range(workers)
    ]
    events = f"{app_name}.three_steps.events"
    changelog = f"{app_name}-three_steps-instances-changelog"
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{app_name}-bench-reader",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 2, "partitioner": "murmur2_random"}
    )
    try:
        reader.subscribe([changelog])
        _wait_for_group(work, workers)
        # Warm-up: until workers have their tasks running and a first wave of workflows has gone
        # through every partition, latencies measure start-up, not the engine. Not timed.
        _drive(producer, reader, events, "warm", warmup, rate, timeout=120)
        cpu_before = _workers_cpu_s(procs)
        started, done, t0 = _drive(producer, reader, events, "i", instances, rate, timeout=300)
        cpu_used = _workers_cpu_s(procs) - cpu_before
        elapsed = max(done.values()) - t0
        latencies = [1000 * (done[k] - started[k]) for k in done]
        if os.environ.get("SF_BENCH_VERBOSE"):
            _print_deciles(started, done)
        return {
            "records_per_s": instances / elapsed,
            "p50_ms": _percentile(latencies, 0.5),
            "p99_ms": _percentile(latencies, 0.99),
            "elapsed_s": elapsed,
            "worker_cpu_ms_per_workflow": round(1000 * cpu_used / instances, 3),
            "peak_rss_mb": _workers_rss(procs),
        }
    finally:
        reader.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        if os.environ.get("SF_BENCH_VERBOSE"):
            for i in range(workers):
                tail = (work / f"w{i}.log").read_text(errors="replace").splitlines()[-1:]
                print(f"worker {i}: {tail}", file=sys.stderr)


def _drive(
    producer: Producer,
    reader: Consumer,
    events: str,
    prefix: str,
    instances: int,
    rate: float | None,
    timeout: float,
) -> tuple[dict[str, float], dict[str, float], float]:
    """Start ``instances`` workflows (all at once, or ``rate`` per second) and follow them to
    completion through the instances changelog; returns start and completion times by id."""
    started: dict[str, float] = {}
    done: dict[str, float] = {}
    t0 = time.perf_counter()
    next_i = 0
    while len(done) < instances:
        now = time.perf_counter()
        due = instances if rate is None else min(instances, int((now - t0) * rate) + 1)
        while next_i < due:
            wid = f"{prefix}{next_i}"
            producer.produce(
                events, orjson.dumps({"type": "start", "id": wid, "input": next_i}), wid.encode()
            )
            started[wid] = time.perf_counter()
            next_i += 1
        producer.poll(0)
        for msg in reader.consume(1000, 0.005):
            if msg.error() or msg.value() is None or not msg.key().endswith(b"\x00"):
                continue
            header = orjson.loads(msg.value())
            wid = header["id"]
            if header["status"] == "completed" and wid in started and wid not in done:
                done[wid] = time.perf_counter()
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(
                f"only {len(done)} of {instances} workflows completed in {timeout} s"
            )
    return started, done, t0


def _print_deciles(started: dict[str, float], done: dict[str, float]) -> None:
    """Latency by start order: tells a steady state from a stall in part of the run."""
    order = sorted(done, key=started.__getitem__)
    n = len(order)
    for d in range(10):
        part = [1000 * (done[k] - started[k]) for k in order[d * n // 10 : (d + 1) * n // 10]]
        print(
            f"decile {d}: p50 {_percentile(part, 0.5):.0f} ms, "
            f"p99 {_percentile(part, 0.99):.0f} ms",
            file=sys.stderr,
        )


def _wait_for_group(work: Path, workers: int, quiet_s: float = 3.0) -> None:
    """Until every worker has been assigned tasks and no worker's log has changed for
    ``quiet_s``: a rebalance during the timed run would measure the rebalance."""
    logs = [work / f"w{i}.log" for i in range(workers)]
    deadline = time.monotonic() + 120
    last: list[str] = []
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        texts = [log.read_text(errors="replace") for log in logs]
        if texts != last:
            last, quiet_since = texts, time.monotonic()
        elif (
            all("assigned tasks" in t for t in texts) and time.monotonic() - quiet_since >= quiet_s
        ):
            return
        time.sleep(0.2)
    raise TimeoutError(f"workers did not settle in their group within 120 s (logs in {work})")


def _workers_cpu_s(procs: list[subprocess.Popen]) -> float:
    """User + system CPU seconds the workers have used so far: on a machine shared with the
    broker and the bench itself, CPU per workflow moves far less between runs than wall time."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in procs:
        try:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _workers_rss(procs: list[subprocess.Popen]) -> float:
    peak = 0.0
    for p in procs:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return round(peak, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument(
        "--rate", type=float, default=None, help="starts per second (default: all at once)"
    )
    parser.add_argument("--warmup", type=int, default=1000, help="untimed workflows run first")
    parser.add_argument(
        "--step-sleep",
        type=float,
        default=0.0,
        help="seconds each step waits, as on a service call (default 0)",
    )
    parser.add_argument("--async-steps", action="store_true", help="async def steps")
    parser.add_argument(
        "--partitions",
        type=int,
        default=int(os.environ.get("SF_BENCH_PARTITIONS", "6")),
        help="partitions of the workflow's topics (default: $SF_BENCH_PARTITIONS or 6)",
    )
    args = parser.parse_args()
    print(
        json.dumps(
            run(
                args.bootstrap,
                args.workers,
                args.instances,
                args.rate,
                args.warmup,
                args.partitions,
                args.step_sleep,
                args.async_steps,
            )
        )
    )


if __name__ == "__main__":
    main()
