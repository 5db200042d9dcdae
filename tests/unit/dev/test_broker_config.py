"""server.properties generation and loopback port planning for the local cluster (no JVM)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamflow.dev.broker_config import (
    allocate_ports,
    broker_properties,
    cluster_spec,
    parse_property_overrides,
    plan_ports,
    port_is_free,
    random_kafka_uuid,
    render_properties,
)
from streamflow.errors import DevKafkaError


def _props(nodes: int, **extra: str) -> list[dict[str, str]]:
    spec = cluster_spec(
        [(9000 + 2 * i, 9001 + 2 * i) for i in range(nodes)], extra_properties=extra
    )
    return [broker_properties(spec, node, Path(f"/data/{node.node_id}")) for node in spec.nodes]


def test_single_node_gets_replication_one_everywhere_so_transactions_can_start() -> None:
    (props,) = _props(1)
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "default.replication.factor",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == "/data/1"


def test_single_node_uses_bootstrap_servers_not_voters_so_standalone_format_is_allowed() -> None:
    (props,) = _props(1)
    assert "controller.quorum.voters" not in props
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9001"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9000,CONTROLLER://127.0.0.1:9001"
    assert props["advertised.listeners"] == props["listeners"]


def test_three_nodes_replicate_three_ways_with_min_isr_two() -> None:
    all_props = _props(3)
    assert [p["node.id"] for p in all_props] == ["1", "2", "3"]
    for props in all_props:
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["controller.quorum.bootstrap.servers"] == (
            "127.0.0.1:9001,127.0.0.1:9003,127.0.0.1:9005"
        )
    assert len({p["listeners"] for p in all_props}) == 3


def test_initial_controllers_names_every_voter_with_its_directory_id() -> None:
    spec = cluster_spec([(9000, 9001), (9002, 9003), (9004, 9005)])
    entries = spec.initial_controllers().split(",")
    assert [e.rsplit(":", 1)[0] for e in entries] == [
        "1@127.0.0.1:9001",
        "2@127.0.0.1:9003",
        "3@127.0.0.1:9005",
    ]
    assert [e.rsplit(":", 1)[1] for e in entries] == [n.directory_id for n in spec.nodes]
    assert spec.bootstrap == "127.0.0.1:9000,127.0.0.1:9002,127.0.0.1:9004"


def test_extra_properties_override_the_defaults() -> None:
    (props,) = _props(1, **{"min.insync.replicas": "1", "log.retention.ms": "1000"})
    assert props["log.retention.ms"] == "1000"


def test_rendered_properties_hold_every_key_once() -> None:
    (props,) = _props(1)
    lines = [line for line in render_properties(props).splitlines() if not line.startswith("#")]
    assert dict(line.split("=", 1) for line in lines) == props


def test_kafka_uuids_are_22_url_safe_characters_and_never_start_with_a_dash() -> None:
    ids = {random_kafka_uuid() for _ in range(500)}
    assert len(ids) == 500
    for value in ids:
        assert len(value) == 22
        assert not value.startswith("-")
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_property_overrides_parse_and_reject_typos() -> None:
    assert parse_property_overrides(["a.b=1", "c= x=y "]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(DevKafkaError, match="key=value"):
        parse_property_overrides(["log.retention.ms"])


def test_allocated_ports_are_distinct_and_free() -> None:
    ports = allocate_ports(6)
    assert len(set(ports)) == 6
    assert all(port_is_free(p) for p in ports)


def test_plan_without_port_gives_each_node_two_distinct_ports() -> None:
    plan = plan_ports(3, None)
    flat = [p for pair in plan for p in pair]
    assert len(plan) == 3 and len(set(flat)) == 6


def test_plan_with_port_numbers_client_ports_consecutively() -> None:
    base = _free_run(3)
    plan = plan_ports(3, base)
    assert [client for client, _ in plan] == [base, base + 1, base + 2]
    assert not {ctl for _, ctl in plan} & {base, base + 1, base + 2}


def test_requested_port_in_use_is_refused_with_its_address() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert not port_is_free(busy)
        with pytest.raises(DevKafkaError, match=rf"127\.0\.0\.1:{busy} already in use.*--port"):
            plan_ports(1, busy)


def test_port_range_must_fit_below_65536() -> None:
    with pytest.raises(DevKafkaError, match="65536"):
        plan_ports(3, 65534)


def _free_run(length: int) -> int:
    """A port p with p..p+length-1 all free right now."""
    for candidate in allocate_ports(20):
        if candidate + length <= 65535 and all(port_is_free(candidate + i) for i in range(length)):
            return candidate
    pytest.skip("no run of free consecutive ports found")
