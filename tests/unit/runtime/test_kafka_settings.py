"""One place where Kafka client settings are resolved (kafka/settings.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamflow import App
from streamflow.cli import main
from streamflow.errors import ConfigError
from streamflow.kafka.settings import resolve
from streamflow.runtime.config import admin_config, consumer_config, producer_config


def test_later_sources_win_key_by_key(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text(
        "# what people already have\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
        "ssl.ca.location=/etc/ca.pem\n"
    )
    settings = resolve(
        app={"security.protocol": "SSL", "socket.timeout.ms": 30000, "client.rack": "a"},
        config_file=props,
        cli=["sasl.mechanism=SCRAM-SHA-512", "client.rack=b"],
        environ={"STREAMFLOW_KAFKA_SASL_PASSWORD": "hunter2", "STREAMFLOW_KAFKA_CLIENT_RACK": "c"},
    )
    assert settings.values == {
        "security.protocol": "SASL_SSL",  # the file over the App
        "socket.timeout.ms": "30000",  # the App's, as text
        "client.rack": "c",  # the environment over --kafka over the App
        "sasl.mechanism": "SCRAM-SHA-512",  # --kafka over the file
        "ssl.ca.location": "/etc/ca.pem",
        "sasl.password": "hunter2",  # STREAMFLOW_KAFKA_SASL_PASSWORD
    }
    assert settings.sources["sasl.mechanism"] == "--kafka"


def test_streamflows_own_variables_under_the_prefix_are_not_settings() -> None:
    env = {"STREAMFLOW_KAFKA_DIR": "/tmp/run", "STREAMFLOW_KAFKA_CLIENT_ID": "w"}
    assert resolve(environ=env).values == {"client.id": "w"}


def test_a_toml_file_gives_its_kafka_table_nested_tables_as_dotted_keys(tmp_path: Path) -> None:
    toml = tmp_path / "streamflow.toml"
    toml.write_text(
        '[kafka]\n"security.protocol" = "SASL_SSL"\n'
        '[kafka.sasl]\nmechanism = "SCRAM-SHA-256"\nusername = "app"\n'
        "[kafka.enable.ssl.certificate]\nverification = true\n"
    )
    values = resolve(config_file=toml, environ={}).values
    assert values == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "app",
        "enable.ssl.certificate.verification": "true",
    }


@pytest.mark.parametrize(
    "key", ["isolation.level", "enable.auto.commit", "enable.idempotence", "transactional.id"]
)
def test_settings_exactly_once_depends_on_are_refused_naming_key_and_source(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key!r} \(from --kafka\) cannot be overridden"):
        resolve(cli=[f"{key}=x"], environ={})
    env = {"STREAMFLOW_KAFKA_" + key.upper().replace(".", "_"): "x"}
    with pytest.raises(ConfigError, match="environment variables"):
        resolve(environ=env)


def test_secrets_never_show(tmp_path: Path) -> None:
    settings = resolve(
        cli=["sasl.username=app", "sasl.password=hunter2", "ssl.key.password=k3y"], environ={}
    )
    assert "hunter2" not in repr(settings) and "k3y" not in repr(settings)
    assert settings.redacted()["sasl.username"] == "app"
    with pytest.raises(ConfigError, match=r"sasl\.password") as info:
        resolve(cli=["sasl.password:hunter2"], environ={})  # malformed: no '='
    assert "hunter2" not in str(info.value)
    bad = tmp_path / "bad.properties"
    bad.write_text("sasl.password hunter2\n")
    with pytest.raises(ConfigError, match=r"bad\.properties:1: expected key=value") as info:
        resolve(config_file=bad, environ={})
    assert "hunter2" not in str(info.value) and "sasl.password" in str(info.value)


def test_every_client_of_an_app_gets_the_settings_and_keeps_what_exactly_once_needs() -> None:
    app = App("secured", kafka={"security.protocol": "SSL", "fetch.max.bytes": 1024})
    config = app.config
    consumer = consumer_config(config, "range")
    producer = producer_config(config, "secured-w1")
    admin = admin_config(config)
    for conf in (consumer, producer, admin):
        assert conf["security.protocol"] == "SSL"
    assert consumer["fetch.max.bytes"] == "1024", "a tuning setting of the user's wins"
    assert (
        consumer["isolation.level"] == "read_committed" and consumer["enable.auto.commit"] is False
    )
    assert producer["transactional.id"] == "secured-w1" and producer["enable.idempotence"] is True


def test_the_cli_refuses_a_protected_override_with_one_line(tmp_path: Path) -> None:
    app_file = tmp_path / "app.py"
    app_file.write_text("from streamflow import App\napp = App('cli-settings')\n")
    result = CliRunner().invoke(main, ["run", str(app_file), "--kafka", "enable.auto.commit=true"])
    assert result.exit_code != 0
    assert "'enable.auto.commit' (from --kafka) cannot be overridden" in result.output
    assert "Traceback" not in result.output


def test_a_setting_librdkafka_does_not_know_is_named_with_its_source() -> None:
    settings = resolve(cli=["sasl.mechanisms=PLAIN", "no.such.thing=1"], environ={})
    with pytest.raises(ConfigError, match=r"'no\.such\.thing' comes from --kafka"):
        settings.check("127.0.0.1:1")  # nothing listens there: only the configuration is judged
    resolve(cli=["client.id=w1"], environ={}).check("127.0.0.1:1")


def test_a_member_that_misses_its_assignment_is_fenced_within_a_minute_not_five() -> None:
    """max.poll.interval.ms is the rebalance timeout of the consumer protocol: it bounds how
    long partitions stay with a member that never hands them over. Short, but longer than the
    worker's loop can block (a shutdown grace plus two bounded transaction calls)."""
    app = App("fenced-soon")
    config = app.config
    interval = consumer_config(config, "range")["max.poll.interval.ms"]
    blocked_ms = config.shutdown_grace * 1000 + 2 * config.transaction_timeout_ms
    assert blocked_ms < interval <= 60_000
    slow = dataclasses.replace(config, transaction_timeout_ms=60_000)
    assert consumer_config(slow, "range")["max.poll.interval.ms"] > 10_000 + 2 * 60_000
    tuned = App("tuned", kafka={"max.poll.interval.ms": 90_000}).config
    assert str(consumer_config(tuned, "range")["max.poll.interval.ms"]) == "90000"
