"""Operating a worker on a real broker: metrics, status, JSON logs, dead-letter replay."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine_helpers import (
    REPO,
    WorkerProcess,
    create_topic,
    decoded_by_key,
    produce_events,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "keyed_count.py"
KEYS = 7
EVENTS = 300
POISON = {40, 41, 150, 151, 299}


def _env() -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        "SF_TEST_APP": f"op-{run}",
        "SF_TEST_INPUT": f"op-in-{run}",
        "SF_TEST_OUTPUT": f"op-out-{run}",
    }


def _topics(bootstrap: str, env: dict[str, str], partitions: int) -> None:
    create_topic(bootstrap, env["SF_TEST_INPUT"], partitions)
    create_topic(bootstrap, env["SF_TEST_OUTPUT"], partitions)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events() -> list[tuple[str, dict]]:
    return [
        (f"k{i % KEYS}", {"seq": i, **({"poison": True} if i in POISON else {})})
        for i in range(EVENTS)
    ]


def _cli(*args: str, env: dict[str, str], bootstrap: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streamflow", *args, "--bootstrap", bootstrap],
        env={**env, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _metrics(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(text):  # raises on text Prometheus rejects
        families[family.name] = family.samples
    return families


def _total(families: dict[str, list], family: str, sample: str | None = None) -> float:
    """The sum of a family's samples (a counter's ``_total`` ones, unless ``sample`` says)."""
    names = {sample} if sample else {family, family + "_total"}
    return sum(s.value for s in families.get(family, []) if s.name in names)


def test_metrics_status_and_json_logs_match_what_was_processed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env()
    _topics(kafka_bootstrap, env, 3)
    port = _free_port()
    worker_env = {**env, "STREAMFLOW_HTTP_PORT": str(port), "STREAMFLOW_LOG_FORMAT": "json"}
    log_file = tmp_path / "w.log"
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", worker_env, log_file)
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], _events())
        good = EVENTS - len(POISON)
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == good,
            60,
            what="the good records processed",
        )
        # Figures are published once a second: wait for the processed count to show.
        wait_for(
            lambda: _total(_metrics(port), "streamflow_records_processed") == EVENTS,
            20,
            what="metrics to show every record",
        )
        families = _metrics(port)
        status = json.loads(
            _cli("status", str(APP_FILE), "--json", env=env, bootstrap=kafka_bootstrap)
        )
    finally:
        assert worker.terminate() == 0

    assert _total(families, "streamflow_dead_letters") == len(POISON)
    transactions = _total(families, "streamflow_transactions")
    assert transactions >= 1
    assert (
        _total(
            families, "streamflow_commit_latency_seconds", "streamflow_commit_latency_seconds_count"
        )
        == transactions
    )
    lags = [s for s in families["streamflow_consumer_lag_records"]]
    assert len(lags) == 3 and all(s.value == 0 for s in lags), lags
    running = [s for s in families["streamflow_task_running"] if s.value == 1]
    assert len(running) == 3

    # status: the group's view and the worker's own, found through its client.id
    assert status["state"] == "stable" and len(status["members"]) == 1
    member = status["members"][0]
    assert member["endpoint"] == f"127.0.0.1:{port}"
    assert sorted(member["partitions"]) == [f"{env['SF_TEST_INPUT']}[{p}]" for p in range(3)]
    assert {t["state"] for t in member["worker"]["tasks"]} == {"running"}
    assert sum(t["processed"] for t in member["worker"]["tasks"]) == EVENTS
    assert [p["lag"] for p in status["partitions"]] == [0, 0, 0]
    assert status["dead_letters"] == len(POISON)

    # --log-format json: every line the worker wrote is one JSON object
    lines = log_file.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert any("started" in e["msg"] and e["level"] == "info" for e in events)
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)


def test_dead_letters_replayed_after_a_fix_are_processed_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env()
    _topics(kafka_bootstrap, env, 3)
    good = EVENTS - len(POISON)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], _events())
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == good,
            60,
            what="the good records processed",
        )
    finally:
        assert worker.terminate() == 0

    listed = [
        orjson.loads(line)
        for line in _cli("dlq", "list", str(APP_FILE), "--json", env=env, bootstrap=kafka_bootstrap)
        .strip()
        .splitlines()
    ]
    assert sorted(orjson.loads(d["value"])["seq"] for d in listed) == sorted(POISON)
    assert {d["error_type"] for d in listed} == {"ValueError"}
    assert all(not d["replayed"] and d["source"]["topic"] == env["SF_TEST_INPUT"] for d in listed)
    one = orjson.loads(
        _cli("dlq", "show", str(APP_FILE), listed[0]["id"], env=env, bootstrap=kafka_bootstrap)
    )
    assert "poison event" in one["error"] and "Traceback" in one["trace"]
    assert one["stage"] == "process" and one["truncated"] is None
    text = _cli("dlq", "list", str(APP_FILE), env=env, bootstrap=kafka_bootstrap).splitlines()
    assert all(" process " in line for line in text[:-1]), text  # the stage column
    filtered = _cli(
        "dlq", "list", str(APP_FILE), "--error", "KeyError", env=env, bootstrap=kafka_bootstrap
    )
    assert filtered.strip().endswith("0 dead letter(s)")

    # The fix: poison events now count. Replay twice, with the worker running: once each.
    fixed = WorkerProcess(
        APP_FILE,
        kafka_bootstrap,
        tmp_path / "w",
        {**env, "SF_TEST_FIXED": "1"},
        tmp_path / "w2.log",
    )
    try:
        dry = _cli("dlq", "replay", str(APP_FILE), "--dry-run", env=env, bootstrap=kafka_bootstrap)
        assert "would replay 5 dead letter(s)" in dry
        first = _cli("dlq", "replay", str(APP_FILE), env=env, bootstrap=kafka_bootstrap)
        second = _cli("dlq", "replay", str(APP_FILE), env=env, bootstrap=kafka_bootstrap)
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) >= EVENTS,
            60,
            what="the replayed records processed",
        )
    finally:
        assert fixed.terminate() == 0
    assert "replayed 5 dead letter(s); 0 replayed before" in first
    assert "replayed 0 dead letter(s); 5 replayed before" in second

    outputs = decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"]))
    assert sum(len(v) for v in outputs.values()) == EVENTS  # every event counted once
    per_key = Counter(f"k{i % KEYS}" for i in range(EVENTS))
    assert {k: v[-1]["count"] for k, v in outputs.items()} == dict(per_key)
    relisted = _cli("dlq", "list", str(APP_FILE), "--json", env=env, bootstrap=kafka_bootstrap)
    assert all(orjson.loads(line)["replayed"] for line in relisted.strip().splitlines())


def _store_contents(state_dir: Path, app: str) -> dict[str, dict]:
    """Every committed entry of the counts store under a stopped worker's state dir."""
    from streamflow.serde.base import JSON, STR
    from streamflow.state.store import KeyValueStore

    found: dict[str, dict] = {}
    for task_dir in sorted((state_dir / app).iterdir()):
        path = task_dir / "counts"
        if not path.is_dir():
            continue
        store = KeyValueStore("counts", path, STR, JSON)
        try:
            found.update(dict(store.committed_items()))
        finally:
            store.close()
    return found


def test_queries_reach_the_owner_after_a_rebalance_then_the_changelog_and_rebuild_matches(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env()
    _topics(kafka_bootstrap, env, 3)
    events = [(k, {"seq": v["seq"]}) for k, v in _events()]  # no poison here
    per_key = Counter(k for k, _ in events)
    ports = [_free_port(), _free_port()]
    workers = [
        WorkerProcess(
            APP_FILE,
            kafka_bootstrap,
            tmp_path / f"w{i}",
            {**env, "STREAMFLOW_HTTP_PORT": str(port)},
            tmp_path / f"w{i}.log",
        )
        for i, port in enumerate(ports)
    ]
    app_file = str(APP_FILE)

    def get(key: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "streamflow", "state", "get", app_file, "counts", key,
             "--bootstrap", kafka_bootstrap],
            env={**env, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        if not done.stdout.strip():  # "cannot be answered for sure" (a takeover under way)
            return {"found": False, "error": done.stderr}
        return orjson.loads(done.stdout)

    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events)
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == EVENTS,
            60,
            what="every record processed",
        )
        wait_for(lambda: len(_cli("status", app_file, "--json", "--no-workflows", env=env,
                                  bootstrap=kafka_bootstrap)) > 0 and
                 len(json.loads(_cli("status", app_file, "--json", "--no-workflows", env=env,
                                     bootstrap=kafka_bootstrap))["members"]) == 2,
                 60, what="both workers in the group")  # fmt: skip
        answer = get("k3")
        assert answer["found"] and answer["value"]["count"] == per_key["k3"], answer
        scanned = [
            orjson.loads(line)
            for line in _cli(
                "state", "scan", app_file, "counts", env=env, bootstrap=kafka_bootstrap
            )
            .strip()
            .splitlines()
        ]
        assert {e["key"]: e["value"]["count"] for e in scanned} == dict(per_key)
        assert get("nope")["found"] is False

        # Kill the worker that answered: the survivor takes the task over and answers.
        owner_port = next(
            p for p in ports
            if json.loads(urllib.request.urlopen(f"http://127.0.0.1:{p}/status", timeout=5).read())
            ["worker_id"] == answer["worker"]
        )  # fmt: skip
        victim = ports.index(owner_port)
        workers[victim].kill()

        def survivor_answers() -> bool:
            again = get("k3")
            return bool(again.get("found")) and again["worker"] != answer["worker"]

        wait_for(survivor_answers, 60, what="the survivor to answer for k3")
        assert get("k3")["value"]["count"] == per_key["k3"]
        # status: the killed worker's tasks moved to the survivor, which owns every partition
        moved = json.loads(
            _cli("status", app_file, "--json", "--no-workflows", env=env, bootstrap=kafka_bootstrap)
        )
        assert len(moved["members"]) == 1
        assert {p["owner"] for p in moved["partitions"]} == {moved["members"][0]["client_id"]}
        assert len(moved["members"][0]["worker"]["tasks"]) == 3
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.terminate()

    # No worker runs: the changelog answers, with the same value.
    from_changelog = get("k3")
    assert (
        from_changelog["source"] == "changelog"
        and from_changelog["value"]["count"] == per_key["k3"]
    )

    # Rebuild the survivor's stores from the changelogs: the same entries as before.
    survivor_dir = tmp_path / f"w{1 - victim}"
    before = _store_contents(survivor_dir, env["SF_TEST_APP"])
    assert {k: v["count"] for k, v in before.items()} == dict(per_key)
    out = _cli("state", "rebuild", app_file, "counts", "--state-dir", str(survivor_dir),
               env=env, bootstrap=kafka_bootstrap)  # fmt: skip
    assert out.count("rebuilt counts of task") == 3, out
    assert _store_contents(survivor_dir, env["SF_TEST_APP"]) == before


def test_app_run_async_processes_and_stops_cleanly_when_cancelled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    import asyncio

    from tests.engine_helpers import load_app_with_env

    env = _env()
    _topics(kafka_bootstrap, env, 3)
    app = load_app_with_env(APP_FILE, env)
    events = [(k, {"seq": v["seq"]}) for k, v in _events()]

    async def main() -> None:
        running = asyncio.ensure_future(
            app.run_async(bootstrap=kafka_bootstrap, state_dir=tmp_path / "s")
        )
        await asyncio.to_thread(produce_events, kafka_bootstrap, env["SF_TEST_INPUT"], events)
        for _ in range(600):
            outputs = await asyncio.to_thread(
                lambda: read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=2)
            )
            if len(outputs) == EVENTS:
                break
            await asyncio.sleep(0.1)
        running.cancel()
        try:
            await running
        except asyncio.CancelledError:
            pass

    asyncio.run(asyncio.wait_for(main(), 120))
    assert len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"])) == EVENTS
    # Cancelled = SIGTERM: the worker left the group (a killed one would stay a member until
    # its session timed out) and committed its offsets: nothing left to process.
    status = json.loads(
        _cli(
            "status", str(APP_FILE), "--json", "--no-workflows", env=env, bootstrap=kafka_bootstrap
        )
    )
    assert status["members"] == [] and [p["lag"] for p in status["partitions"]] == [0, 0, 0]


def _cli_fails(*args: str, env: dict[str, str], bootstrap: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streamflow", *args, "--bootstrap", bootstrap],
        env={**env, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_replay_under_a_new_app_name_reproduces_the_outputs_exactly(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env()
    _topics(kafka_bootstrap, env, 3)
    events = [(k, {"seq": v["seq"]}) for k, v in _events()]
    app_file = str(APP_FILE)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events)
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == EVENTS,
            60,
            what="every record processed",
        )
        refused = _cli_fails(
            "replay", app_file, "--from", "earliest", "--to-app", "x", env=env,
            bootstrap=kafka_bootstrap,
        )  # fmt: skip
        assert "has 1 member(s)" in refused and "stop its workers first" in refused
    finally:
        assert worker.terminate() == 0
    original = decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"]))

    same = _cli_fails("replay", app_file, "--from", "earliest", env=env, bootstrap=kafka_bootstrap)
    assert "--to-app NEW" in same and "--reset-state" in same
    new_app = env["SF_TEST_APP"] + "-replay"
    out = _cli(
        "replay", app_file, "--from", "earliest", "--to-app", new_app, env=env,
        bootstrap=kafka_bootstrap,
    )  # fmt: skip
    assert f"group {new_app}:" in out and "-> offset 0" in out
    replayer = WorkerProcess(
        APP_FILE,
        kafka_bootstrap,
        tmp_path / "r",
        {**env, "STREAMFLOW_APP_NAME": new_app},
        tmp_path / "r.log",
    )
    try:
        wait_for(
            lambda: (
                len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == 2 * EVENTS
            ),
            60,
            what="the replay's outputs",
        )
    finally:
        assert replayer.terminate() == 0
    both = decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"]))
    half = {k: v[len(original[k]) :] for k, v in both.items()}
    assert half == original  # the same outputs, key by key, in the same order
    # Its own internal topics: the new app's changelog exists beside the old one.
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert (
        f"{new_app}-counts-changelog" in topics
        and f"{env['SF_TEST_APP']}-counts-changelog" in topics
    )


def test_a_standby_takes_over_without_restoring_the_store(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env()
    _topics(kafka_bootstrap, env, 3)
    keys = 3000
    ports = [_free_port(), _free_port()]
    workers = [
        WorkerProcess(
            APP_FILE,
            kafka_bootstrap,
            tmp_path / f"w{i}",
            {**env, "STREAMFLOW_HTTP_PORT": str(port), "STREAMFLOW_NUM_STANDBYS": "1"},
            tmp_path / f"w{i}.log",
        )
        for i, port in enumerate(ports)
    ]

    def status(port: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
            return json.loads(r.read())

    def warm() -> bool:
        both = [status(p) for p in ports]
        running = [t for s in both for t in s["tasks"] if t["state"] == "running"]
        standbys = [sb for s in both for sb in s["standbys"]]
        return len(running) == 3 and len(standbys) == 3 and all(sb["lag"] == 0 for sb in standbys)

    try:
        produce_events(
            kafka_bootstrap, env["SF_TEST_INPUT"], [(f"k{i}", {"seq": i}) for i in range(keys)]
        )
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == keys,
            60,
            what="every record processed",
        )
        wait_for(warm, 60, what="every task running with a caught-up standby on the other worker")
        victim = next(i for i, p in enumerate(ports) if status(p)["tasks"])
        survivor_port = ports[1 - victim]
        before = _total(_metrics(survivor_port), "streamflow_restored_records")
        workers[victim].kill()
        wait_for(
            lambda: sum(t["state"] == "running" for t in status(survivor_port)["tasks"]) == 3,
            60,
            what="the survivor running every task",
        )
        restored = _total(_metrics(survivor_port), "streamflow_restored_records") - before
        # The moved tasks held ~2/3 of the keys; their standbys were caught up.
        assert restored < 50, f"restored {restored} records: the standby was not used"
        produce_events(
            kafka_bootstrap,
            env["SF_TEST_INPUT"],
            [(f"k{i}", {"seq": keys + i}) for i in range(keys)],
        )
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == 2 * keys,
            60,
            what="the second round processed",
        )
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.terminate()
    latest = {
        k: v[-1]["count"]
        for k, v in decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"])).items()
    }
    assert latest == {f"k{i}": 2 for i in range(keys)}  # the warm copies held every count


def test_a_workflow_journal_is_read_from_its_worker_and_its_steps_are_counted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from tests.engine_helpers import load_app_with_env

    wf_file = REPO / "tests" / "apps" / "workflow_app.py"
    env = {"SF_TEST_APP": f"opwf-{uuid.uuid4().hex[:8]}", "SF_WF_VARIANT": "a"}
    port = _free_port()
    worker = WorkerProcess(
        wf_file, kafka_bootstrap, tmp_path / "w", {**env, "STREAMFLOW_HTTP_PORT": str(port)},
        tmp_path / "w.log",
    )  # fmt: skip
    app = load_app_with_env(wf_file, env)
    client = app.client(kafka_bootstrap)
    try:

        def running() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                    return bool(json.loads(r.read())["tasks"])
            except OSError:
                return False  # not listening yet

        wait_for(running, 60, what="the worker running")
        client.start("waiter", id="w-1")
        client.signal("waiter", "w-1", "go", {"n": 7})

        def journal() -> dict | None:
            out = subprocess.run(
                [sys.executable, "-m", "streamflow", "state", "journal", str(wf_file), "waiter",
                 "w-1", "--bootstrap", kafka_bootstrap],
                env={**env, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            return orjson.loads(out.stdout) if out.returncode == 0 else None

        wait_for(
            lambda: (j := journal()) is not None and j["header"]["status"] == "completed",
            60,
            what="the instance completed, seen through the worker",
        )
        answer = journal()
        families = _metrics(port)
    finally:
        assert worker.terminate() == 0
    assert answer is not None and answer["source"] == "worker"
    assert [e["kind"] for e in answer["entries"]] == ["step", "signal"]
    assert answer["header"]["result"] == {"n": 7}
    attempts = {
        s.labels["step"]: s.value
        for s in families["streamflow_step_attempts"]
        if s.name.endswith("_total") and s.labels["outcome"] == "ok"
    }
    assert attempts == {"record": 1}
    transitions = {
        s.labels["status"]: s.value
        for s in families["streamflow_workflow_transitions"]
        if s.labels["workflow"] == "waiter"
    }
    assert transitions == {"running": 1, "completed": 1}


@pytest.mark.parametrize(
    ("asked", "spoken"), [("auto", "consumer"), ("consumer", "consumer"), ("classic", "classic")]
)
def test_the_group_protocol_moves_tasks_on_a_kill_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, asked: str, spoken: str
) -> None:
    # auto, the default, speaks the new protocol: the dev broker (Kafka 4) offers it.
    env = _env()
    _topics(kafka_bootstrap, env, 4)
    extra = {"STREAMFLOW_GROUP_PROTOCOL": asked}
    workers = [
        WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / f"w{i}", {**env, **extra},
                      tmp_path / f"w{i}.log")
        for i in range(2)
    ]  # fmt: skip
    events = [(f"k{i % 50}", {"seq": i}) for i in range(4000)]
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events[:2000])
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == 2000,
            90,
            what="the first half processed",
        )
        status = json.loads(
            _cli(
                "status",
                str(APP_FILE),
                "--json",
                "--no-workflows",
                env=env,
                bootstrap=kafka_bootstrap,
            )
        )
        assert status["protocol"] == spoken and len(status["members"]) == 2
        workers[0].kill()
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events[2000:])
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=5)) == 4000,
            120,
            what="the second half processed by the survivor",
        )
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.terminate()
    outputs = decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"]))
    for key, values in outputs.items():
        assert [v["count"] for v in values] == list(range(1, len(values) + 1)), key
    assert sum(len(v) for v in outputs.values()) == 4000


def test_workflow_instances_page_through_two_workers_in_id_order(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from streamflow.operate.state_query import StateQuery
    from tests.engine_helpers import load_app_with_env

    wf_file = REPO / "tests" / "apps" / "workflow_app.py"
    env = {"SF_TEST_APP": f"oppg-{uuid.uuid4().hex[:8]}", "SF_WF_VARIANT": "a"}
    ports = [_free_port(), _free_port()]
    workers = [
        WorkerProcess(wf_file, kafka_bootstrap, tmp_path / f"w{i}",
                      {**env, "STREAMFLOW_HTTP_PORT": str(p)}, tmp_path / f"w{i}.log")
        for i, p in enumerate(ports)
    ]  # fmt: skip
    app = load_app_with_env(wf_file, env)
    client = app.client(kafka_bootstrap)
    query = StateQuery(app, {"bootstrap.servers": kafka_bootstrap})
    ids = sorted(f"p-{i:03d}" for i in range(120))
    try:
        wait_for(lambda: len(query.endpoints()) == 2, 60, what="both workers in the group")
        for ident in ids:
            client.start("waiter", id=ident)

        def all_listed() -> bool:
            try:
                return len(query.instances("waiter", limit=500)["instances"]) == len(ids)
            except Exception:  # noqa: BLE001 - tasks still moving
                return False

        wait_for(all_listed, 60, what="every instance started")
        pages, cursor = [], None
        while True:
            page = query.instances("waiter", after=cursor, limit=50)
            pages.append([i["id"] for i in page["instances"]])
            cursor = page["next"]
            if cursor is None:
                break
        running = query.instances("waiter", limit=500, status="running")["instances"]
        counts = query.counts("waiter")
    finally:
        for w in workers:
            w.terminate()
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i for p in pages for i in p] == ids  # in id order, none twice, none missing
    assert len(running) == len(ids)  # each waits for its signal
    assert counts == {"running": len(ids)}  # from the workers' counts stores, no scan
