"""Peer benchmark: DBOS Transact running 3-step durable workflows on SQLite, on this machine.

It mirrors the streamflow "3-step workflows, all started at once" rows (``workflow_bench.py``):
the same three steps (reserve n+1, charge n*2, notify n-1), here each also sleeping
``--step-sleep`` seconds (``time.sleep`` in the sync variant, ``await asyncio.sleep`` in the async
one), N workflows started at once, timed from the first start until the last completion.
Per workflow, latency runs from just before its start call to the moment its completion is seen
in the process. Peak RSS is this process's VmHWM: with DBOS the whole engine is in-process.

How the workflows are started, and why: ``DBOS.start_workflow`` (sync) and
``await DBOS.start_workflow_async`` (async) are what the DBOS docs give for running a workflow
in the background and are the direct "start them all now" calls. A ``Queue`` is the docs'
tool for *limiting* concurrency; with no limit wanted it only adds a dequeue poller (default
1 s interval) between start and run, which would charge DBOS for latency it need not have.

DBOS is used with its defaults, as a user following its docs would: the system database is a
SQLite file in a temp dir (``system_database_url``; no Postgres), a 20-connection pool,
rollback journal. Note what those defaults mean: every sync workflow runs on its own thread
(the executor pool is unbounded by default), and each start, step and completion is a SQLite
write, all serialised by SQLite's single writer lock. A start call returns only after its
row is committed, so the start loop takes most of a run (measured: ~18 ms a start while
earlier workflows write their steps, and about as much with ``--step-sleep 0``): the throughput
is the rate at which DBOS on SQLite can start workflows, not a cost of the steps' sleep.

An untimed warm-up wave (``WARMUP`` workflows) runs first, as in ``workflow_bench.py``, so that
the timed figures do not include first-use costs (connections opened, threads made, caches).

    python bench/dbos_bench.py --workflows 2000 --step-sleep 0.05 --variant sync|async

prints one JSON line on stdout as its last line; DBOS's own logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

try:
    from dbos import DBOS, DBOSConfig
except ImportError as exc:  # the peer is optional: never a dependency of streamflow itself
    sys.exit(
        f"dbos_bench: cannot import dbos ({exc}); install it in its own venv with "
        f"pip install 'dbos>=3.4,<4'"
    )

WARMUP = 100
# Read by the steps at call time; set from --step-sleep before DBOS is launched.
STEP_SLEEP = 0.05


@DBOS.step()
def reserve(n: int) -> int:
    time.sleep(STEP_SLEEP)
    return n + 1


@DBOS.step()
def charge(n: int) -> int:
    time.sleep(STEP_SLEEP)
    return n * 2


@DBOS.step()
def notify(n: int) -> int:
    time.sleep(STEP_SLEEP)
    return n - 1


@DBOS.workflow()
def three_steps(n: int) -> int:
    return notify(charge(reserve(n)))


@DBOS.step()
async def reserve_async(n: int) -> int:
    await asyncio.sleep(STEP_SLEEP)
    return n + 1


@DBOS.step()
async def charge_async(n: int) -> int:
    await asyncio.sleep(STEP_SLEEP)
    return n * 2


@DBOS.step()
async def notify_async(n: int) -> int:
    await asyncio.sleep(STEP_SLEEP)
    return n - 1


@DBOS.workflow()
async def three_steps_async(n: int) -> int:
    return await notify_async(await charge_async(await reserve_async(n)))


def run_sync(count: int) -> tuple[list[float], list[float]]:
    """Start ``count`` sync workflows back to back; return start and completion times.

    Completion is stamped by a done-callback on the handle's ``future`` (the executor future
    that DBOS resolves after writing the SUCCESS status): calling ``get_result`` handle by handle
    would stamp a workflow that finished early with the time a slower one before it finished,
    and a waiting thread per workflow would add 2000 threads to the ones being measured.
    """
    starts = [0.0] * count
    ends = [0.0] * count
    remaining = [count]
    lock = threading.Lock()
    all_done = threading.Event()

    def stamp(i: int, _future: Future[int]) -> None:
        ends[i] = time.perf_counter()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                all_done.set()

    handles = []
    for i in range(count):
        starts[i] = time.perf_counter()
        handle = DBOS.start_workflow(three_steps, i)
        future: Future[int] = handle.future  # type: ignore[attr-defined]
        future.add_done_callback(partial(stamp, i))
        handles.append(handle)
    for i, handle in enumerate(handles):  # surfaces any failed workflow as an exception
        if handle.get_result() != 2 * (i + 1) - 1:
            raise RuntimeError(f"workflow {i} returned a wrong result")
    all_done.wait()
    return starts, ends


async def run_async(count: int) -> tuple[list[float], list[float]]:
    """Start ``count`` async workflows back to back on this event loop; return start and
    completion times. Each handle gets its own waiting task, so completion is stamped as soon
    as that workflow's result is available, whatever the order."""
    starts = [0.0] * count
    ends = [0.0] * count

    async def follow(i: int, handle: Any) -> None:
        if await handle.get_result() != 2 * (i + 1) - 1:
            raise RuntimeError(f"workflow {i} returned a wrong result")
        ends[i] = time.perf_counter()

    waiters = []
    for i in range(count):
        starts[i] = time.perf_counter()
        handle = await DBOS.start_workflow_async(three_steps_async, i)
        waiters.append(asyncio.create_task(follow(i, handle)))
    await asyncio.gather(*waiters)
    return starts, ends


def percentile(values: list[float], q: float) -> float:
    """Same definition as ``workflow_bench._percentile``, so the rows compare."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> None:
    global STEP_SLEEP
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--step-sleep", type=float, default=0.05)
    parser.add_argument("--variant", choices=["sync", "async"], default="sync")
    args = parser.parse_args()
    STEP_SLEEP = args.step_sleep

    work = Path(tempfile.mkdtemp(prefix="dbos-bench-"))
    config: DBOSConfig = {
        "name": "dbos-bench",
        "log_level": "WARNING",
        "system_database_url": f"sqlite:///{work / 'dbos.sqlite'}",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        if args.variant == "sync":
            run_sync(WARMUP)
            starts, ends = run_sync(args.workflows)
        else:

            async def both() -> tuple[list[float], list[float]]:
                await run_async(WARMUP)
                return await run_async(args.workflows)

            starts, ends = asyncio.run(both())
    finally:
        DBOS.destroy()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = max(ends) - starts[0]
    latencies = [1000 * (e - s) for s, e in zip(starts, ends, strict=True)]
    print(f"dbos {args.variant}: {args.workflows} workflows in {elapsed:.2f} s", file=sys.stderr)
    print(
        json.dumps(
            {
                "records_per_s": args.workflows / elapsed,
                "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99),
                "elapsed_s": elapsed,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
