"""Restore time of a fresh worker after a soak, with and without retention.

Two apps run the same one-step workflow, one with ``retention=2 s`` and one with
``retention=None``. Each starts ``--instances`` instances with ``start_many`` and lets them
finish; the first app's expired instances are deleted through its changelog (tombstones).
Then, for each app, a worker with an empty state directory is started and timed from process
start until it answers a ``get`` of a new instance it completed (group join, restore, first
workflow); the records it restored are summed from its log.

What this shows, and what it cannot: retention bounds the *store* (the live instances a
restored worker holds, what ``list`` pages through). The changelog a restore reads shrinks only
once Kafka has compacted it, and a tombstone goes on a second cleaning pass after
``delete.retention.ms`` (24 h on our changelogs): segments roll at 1 GB or 7 days, so that is
production time, not bench time. Until then the retention app's restore reads its tombstones
too, and the bench reports it as it is.

Usage: retention_bench.py --bootstrap HOST:PORT [--instances 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
from datetime import timedelta
from streamflow import App

app = App(os.environ["SF_BENCH_APP"], partitions=int(os.environ["SF_BENCH_PARTITIONS"]))
seconds = os.environ["SF_BENCH_RETENTION_S"]

@app.step
def touch(ctx, n: int) -> int:
    return n + 1

@app.workflow(retention=None if seconds == "none" else timedelta(seconds=float(seconds)))
async def one_step(ctx, n: int) -> int:
    return await ctx.step(touch, n)
"""


def _load(app_file: Path, env: dict[str, str]):
    os.environ.update(env)
    from streamflow.cli.app_file import load_app

    return load_app(str(app_file))


def _worker(app_file: Path, bootstrap: str, state_dir: Path, env: dict[str, str], log: Path):
    command = [sys.executable, "-m", "streamflow", "run", str(app_file)]
    return subprocess.Popen(
        [*command, "--bootstrap", bootstrap, "--state-dir", str(state_dir)],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=open(log, "wb"),  # the child owns it
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ready(client, ident: str, timeout: float = 300) -> None:
    """Until a new instance started now has completed and the owning worker answers for it."""
    client.start("one_step", id=ident, input=0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client._owners.endpoints(refresh=True)
        view = client.get("one_step", ident)
        if view is not None and view.done:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{ident} did not complete")


def _changelogs(app) -> list[str]:
    return [spec.changelog for spec in app.topology.stores.values()]


def _count_records(bootstrap: str, topics: list[str]) -> int:
    from streamflow.cluster.topic_reader import read_to_end

    client = {"bootstrap.servers": bootstrap}
    return sum(
        sum(1 for _ in read_to_end(client, t, f"retbench-{uuid.uuid4().hex}")) for t in topics
    )


def run(bootstrap: str, instances: int, partitions: int = 6) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sf-retbench-"))
    app_file = work / "one_step.py"
    app_file.write_text(APP_SOURCE)
    apps = {}
    for label, retention in (("retention", "2"), ("no_retention", "none")):
        env = {
            "SF_BENCH_APP": f"retbench-{label.replace('_', '')}-{uuid.uuid4().hex[:6]}",
            "SF_BENCH_PARTITIONS": str(partitions),
            "SF_BENCH_RETENTION_S": retention,
        }
        app = _load(app_file, env)
        apps[label] = (env, app, app.client(bootstrap))
    out: dict = {"instances": instances}
    try:
        # The soak: every instance started and finished; the expired ones deleted.
        for label, (env, _app, client) in apps.items():
            worker = _worker(app_file, bootstrap, work / f"{label}-1", env, work / f"{label}-1.log")
            try:
                _ready(client, "warm")
                for first in range(0, instances, 50_000):
                    last = min(instances, first + 50_000)
                    client.start_many("one_step", [(f"p{i}", i) for i in range(first, last)])
                client.wait("one_step", f"p{instances - 1}", timeout=600)
                if label == "retention":
                    time.sleep(3)  # past the retention; then every expired instance is gone
                    deadline = time.monotonic() + 300
                    while any(True for _ in client.list("one_step", page_size=1)):
                        if time.monotonic() > deadline:
                            raise TimeoutError("expired instances were not deleted")
                        time.sleep(1)
                out[f"{label}_live_instances"] = sum(
                    1 for _ in client.list("one_step", page_size=1000)
                )
            finally:
                _stop(worker)
        for label, (_env, app, _client) in apps.items():
            out[f"{label}_changelog_records"] = _count_records(bootstrap, _changelogs(app))
        # The timed part: a fresh worker per app, empty state directory.
        for label, (env, _app, client) in apps.items():
            log = work / f"{label}-3.log"
            t0 = time.perf_counter()
            worker = _worker(app_file, bootstrap, work / f"{label}-3", env, log)
            try:
                _ready(client, "after-restore")
                out[f"{label}_ready_s"] = time.perf_counter() - t0
                out[f"{label}_live_after_restore"] = sum(
                    1 for _ in client.list("one_step", page_size=1000)
                )
            finally:
                _stop(worker)
            restored = re.findall(r"restored (\d+) changelog records", log.read_text())
            out[f"{label}_restored_records"] = sum(int(n) for n in restored)
    finally:
        for _env, _app, client in apps.values():
            client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    print(json.dumps(run(args.bootstrap, args.instances, args.partitions)))


if __name__ == "__main__":
    main()
