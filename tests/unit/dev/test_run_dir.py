"""The run directory's state file: what `start` in one shell leaves for `stop` in another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamflow.dev.broker_config import cluster_spec
from streamflow.dev.run_dir import RunDir, RunState
from streamflow.errors import DevKafkaError


def test_state_round_trips_cluster_and_pids(tmp_path: Path) -> None:
    spec = cluster_spec([(9000, 9001), (9002, 9003)], extra_properties={"a": "b"})
    run_dir = RunDir(tmp_path)
    run_dir.save(RunState("4.4.0", spec, {1: 1234, 2: None}))
    loaded = run_dir.require()
    assert loaded.cluster == spec
    assert loaded.pids == {1: 1234, 2: None}
    assert loaded.kafka_version == "4.4.0"
    raw = json.loads((tmp_path / "state.json").read_text())
    assert raw["bootstrap"] == "127.0.0.1:9000,127.0.0.1:9002"
    assert raw["nodes"][0]["log_file"].endswith("node-1/logs/server.log")


def test_with_pids_updates_only_the_named_nodes() -> None:
    state = RunState("4.4.0", cluster_spec([(1, 2), (3, 4)]), {1: 10, 2: 20})
    assert state.with_pids({2: None}).pids == {1: 10, 2: None}


def test_a_corrupt_state_file_asks_for_clean(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(DevKafkaError, match="--clean"):
        RunDir(tmp_path).load()


def test_wipe_forgets_the_cluster(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.save(RunState("4.4.0", cluster_spec([(1, 2)])))
    run_dir.node(1).data_dir.mkdir(parents=True)
    run_dir.wipe()
    assert run_dir.load() is None and not run_dir.node(1).root.exists()
