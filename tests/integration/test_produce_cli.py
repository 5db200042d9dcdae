"""``streamflow produce``: JSON lines on stdin become records, keyed and encoded as the topic
declares; a bad line sends nothing."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import fastavro
import orjson
import pytest

from tests.engine_helpers import REPO, create_topic, read_topic

pytestmark = pytest.mark.kafka


def _produce(app_file: Path, bootstrap: str, stdin: str, *args: str):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow",
            "produce",
            str(app_file),
            *args,
            "--bootstrap",
            bootstrap,
        ],
        input=stdin,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lines_become_keyed_records_and_a_bad_line_sends_none(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    app_file = tmp_path / "app.py"
    app_file.write_text(
        "from streamflow import App\n"
        "app = App('produce-test')\n"
        f"orders = app.topic({topic!r}, key='str', value='json')\n"
        "app.stream(orders).foreach(lambda v: None)\n"
    )
    lines = "\n".join(
        orjson.dumps({"customer": c, "cents": n}).decode()
        for c, n in [("a", 1), ("b", 2), ("a", 3)]
    )
    done = _produce(app_file, kafka_bootstrap, lines + "\n", topic, "--key-field", "customer")
    assert done.returncode == 0 and "produced 3 record(s)" in done.stdout, done
    assert "rdkafka" not in done.stderr
    bad = _produce(
        app_file, kafka_bootstrap, lines + "\n{not json\n", topic, "--key-field", "customer"
    )
    assert bad.returncode == 1 and "line 4: not JSON" in bad.stderr, bad
    keyed = _produce(app_file, kafka_bootstrap, 'z\t{"cents": 9}\n', topic, "--keyed")
    assert keyed.returncode == 0, keyed
    records = read_topic(kafka_bootstrap, topic)
    assert sorted((m.key(), orjson.loads(m.value())["cents"]) for m in records) == [
        (b"a", 1),
        (b"a", 3),
        (b"b", 2),
        (b"z", 9),
    ]
    unknown = _produce(app_file, kafka_bootstrap, lines, "nope")
    assert unknown.returncode == 1 and "declares no topic 'nope'" in unknown.stderr


SCHEMAS = REPO / "tests" / "apps" / "secure_schemas"


def test_avro_values_go_through_the_registry_in_the_wire_format(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An Avro topic: each line is encoded with the declared schema, registered in the app's
    registry (the Kafka-native one here), in the Confluent wire format; read back with
    fastavro and the schema file, not with streamflow."""
    topic = f"totals-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    app_file = tmp_path / "app.py"
    app_file.write_text(
        "from streamflow import App, avro\n"
        f"app = App('produce-avro-{uuid.uuid4().hex[:6]}')\n"
        f"totals = app.topic({topic!r}, key='str', "
        f"value=avro('secure.Total', schema_dir={str(SCHEMAS)!r}))\n"
        "app.stream(totals).foreach(lambda v: None)\n"
    )
    rows = [{"account": "a", "count": 1, "cents": 5}, {"account": "b", "count": 2, "cents": 7}]
    lines = "".join(orjson.dumps(r).decode() + "\n" for r in rows)
    done = _produce(app_file, kafka_bootstrap, lines, topic, "--key-field", "account")
    assert done.returncode == 0 and "produced 2 record(s)" in done.stdout, done
    bad = _produce(app_file, kafka_bootstrap, '{"account": "c", "count": 1}\n', topic)
    assert bad.returncode == 1 and "line 1" in bad.stderr and "cents" in bad.stderr, bad
    schema = fastavro.parse_schema(orjson.loads((SCHEMAS / "total.avsc").read_bytes()))
    decoded = []
    for msg in read_topic(kafka_bootstrap, topic):
        raw = msg.value()
        magic, schema_id = struct.unpack(">bI", raw[:5])
        assert magic == 0 and schema_id >= 0
        decoded.append((msg.key(), fastavro.schemaless_reader(io.BytesIO(raw[5:]), schema)))
    assert sorted(decoded, key=lambda kv: kv[0]) == [(b"a", rows[0]), (b"b", rows[1])]
