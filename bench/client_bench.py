"""Client benchmark: starts per second, ``get`` and start→``wait`` latency with many finished
instances in the store.

One ``streamflow run`` worker (its HTTP endpoint on, as by default) runs a one-step workflow.
``--instances`` of them are started with ``start_many`` and run to the end first. Then, timed:
- starts/s: ``start_many`` (sync and async) of fresh batches, and one ``start`` at a time;
- ``get`` p50/p99 of random finished instances (asks the owning worker);
- start→``wait`` p50 of new instances, one at a time, beside the same workflow's
  start→completion seen on the instances changelog (what ``workflow_bench`` measures);
- the peer: the changelog scan ``get`` did before (``_get_from_changelog``), on the same store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

APP_SOURCE = """
import os
from streamflow import App

app = App(os.environ["SF_BENCH_APP"], partitions=int(os.environ["SF_BENCH_PARTITIONS"]))

@app.step
def touch(ctx, n: int) -> int:
    return n + 1

@app.workflow
async def one_step(ctx, n: int) -> int:
    return await ctx.step(touch, n)
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _load(app_file: Path, env: dict[str, str]):
    os.environ.update(env)
    from streamflow.cli.app_file import load_app

    return load_app(str(app_file))


def _counts(client, app, workflow: str) -> dict[str, int]:
    from streamflow.operate.state_query import StateQuery

    query = StateQuery(app, {"bootstrap.servers": client._bootstrap})
    return query.counts(workflow) or {}


def run(bootstrap: str, instances: int, partitions: int = 6, samples: int = 300) -> dict:
    name = f"clbench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="sf-clbench-"))
    app_file = work / "one_step.py"
    app_file.write_text(APP_SOURCE)
    env = {"SF_BENCH_APP": name, "SF_BENCH_PARTITIONS": str(partitions)}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamflow",
            "run",
            str(app_file),
            "--bootstrap",
            bootstrap,
            "--state-dir",
            str(work / "w"),
        ],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=open(work / "w.log", "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
    )
    app = _load(app_file, env)
    client = app.client(bootstrap)
    out: dict = {"instances": instances}
    try:
        _until_serving(client, app)
        # The population: finished instances in the store.
        t0 = time.perf_counter()
        batch = 50_000
        for first in range(0, instances, batch):
            client.start_many(
                "one_step", [(f"p{i}", i) for i in range(first, min(instances, first + batch))]
            )
        out["start_many_per_s"] = instances / (time.perf_counter() - t0)
        deadline = time.monotonic() + max(300, instances / 500)
        while _counts(client, app, "one_step").get("completed", 0) < instances:
            if time.monotonic() > deadline:
                raise TimeoutError("the population did not finish")
            time.sleep(1)
        # get of finished instances.
        rng = random.Random(7)
        gets = []
        for _ in range(samples):
            wid = f"p{rng.randrange(instances)}"
            t = time.perf_counter()
            view = client.get("one_step", wid)
            gets.append(1000 * (time.perf_counter() - t))
            assert view is not None and view.status == "completed", (wid, view)
        out["get_p50_ms"], out["get_p99_ms"] = _pct(gets, 0.5), _pct(gets, 0.99)
        scans = []
        for _ in range(5):
            wid = f"p{rng.randrange(instances)}"
            t = time.perf_counter()
            assert client._get_from_changelog("one_step", wid) is not None
            scans.append(1000 * (time.perf_counter() - t))
        out["changelog_scan_get_p50_ms"] = _pct(scans, 0.5)
        # start -> wait, one at a time.
        waits = []
        for i in range(100):
            t = time.perf_counter()
            client.start("one_step", id=f"w{i}", input=i)
            assert client.wait("one_step", f"w{i}", timeout=60).result == i + 1
            waits.append(1000 * (time.perf_counter() - t))
        out["start_wait_p50_ms"], out["start_wait_p99_ms"] = _pct(waits, 0.5), _pct(waits, 0.99)
        out["start_completion_on_topic_p50_ms"] = _on_topic_p50(client, app, bootstrap)

        async def concurrent_waits() -> float:
            """300 waits at once from one async client, of finished instances: how long
            until every answer is in (a burst of long polls on one worker endpoint)."""
            async with app.async_client(bootstrap) as aclient:
                ids = [f"p{rng.randrange(instances)}" for _ in range(300)]
                t = time.perf_counter()
                await asyncio.gather(*(aclient.wait("one_step", i, timeout=120) for i in ids))
                return 1000 * (time.perf_counter() - t)

        out["concurrent_300_waits_ms"] = asyncio.run(concurrent_waits())
        # Last, as they leave the worker busy: starts one at a time (each waits for its
        # acknowledgement), and an async start_many.
        t0 = time.perf_counter()
        for i in range(500):
            client.start("one_step", id=f"s{i}", input=i)
        out["start_one_at_a_time_per_s"] = 500 / (time.perf_counter() - t0)

        async def many() -> float:
            async with app.async_client(bootstrap) as aclient:
                t = time.perf_counter()
                await aclient.start_many("one_step", [(f"a{i}", i) for i in range(20_000)])
                return 20_000 / (time.perf_counter() - t)

        out["async_start_many_per_s"] = asyncio.run(many())
    finally:
        client.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return out


def _on_topic_p50(client, app, bootstrap: str, n: int = 100) -> float:
    """The reference for ``wait``: start one instance at a time and see its completion on the
    instances changelog (read_committed, tailed from its end), as ``workflow_bench`` does."""
    import orjson
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    changelog = app.workflows.node_of("one_step").instances.changelog
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"clbench-reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    parts = client._partitions(changelog)
    reader.assign([TopicPartition(changelog, p, OFFSET_END) for p in range(parts)])
    reader.consume(100, 1.0)  # the assignment takes effect
    took = []
    try:
        for i in range(n):
            wid = f"t{i}"
            t = time.perf_counter()
            client.start("one_step", id=wid, input=i)
            while True:
                msgs = [m for m in reader.consume(100, 0.05) if not m.error() and m.value()]
                if any(
                    m.key() == (wid + "\x00").encode()
                    and orjson.loads(m.value())["status"] == "completed"
                    for m in msgs
                ):
                    break
                if time.perf_counter() - t > 60:
                    raise TimeoutError(wid)
            took.append(1000 * (time.perf_counter() - t))
    finally:
        reader.close()
    return _pct(took, 0.5)


def _until_serving(client, app) -> None:
    """Until the worker answers lookups (joined, tasks assigned)."""
    deadline = time.monotonic() + 120
    client.start("one_step", id="ready", input=0)
    while time.monotonic() < deadline:
        client._owners.endpoints(refresh=True)
        view = client.get("one_step", "ready")
        if view is not None and view.done and client._owners._owner:
            return
        time.sleep(0.5)
    raise TimeoutError("the worker did not start serving")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    print(json.dumps(run(args.bootstrap, args.instances, args.partitions)))


if __name__ == "__main__":
    main()
