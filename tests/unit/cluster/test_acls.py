"""The ACLs an app needs, derived from its topology (cluster/acls.py, `streamflow acls`)."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from streamflow import App
from streamflow.cli import main
from streamflow.cluster.acls import app_acls


def _app() -> App:
    app = App("shop")
    orders = app.topic("orders")
    totals = app.topic("totals", partitions=3)
    app.topic("audit")  # declared, never read: what ctx.emit writes
    app.stream(orders).key_by(lambda v: v["customer"], name="by-customer").aggregate(
        "sums", initial=lambda: 0, fn=lambda acc, v: acc + v["cents"]
    ).to(totals)
    return app


def test_each_topic_gets_what_the_app_does_with_it_and_internals_go_by_prefix() -> None:
    rules = {
        (r.resource_type, r.pattern_type, r.name): r
        for r in app_acls(_app().topology, "User:shop", False)
    }
    assert rules[("TOPIC", "LITERAL", "orders")].operations == ("DESCRIBE", "READ")
    assert rules[("TOPIC", "LITERAL", "totals")].operations == ("DESCRIBE", "WRITE", "CREATE")
    assert rules[("TOPIC", "LITERAL", "audit")].operations == ("DESCRIBE", "WRITE")
    assert ("TOPIC", "LITERAL", "shop-by-customer-repartition") not in rules  # by prefix:
    assert "READ" in rules[("TOPIC", "PREFIXED", "shop-")].operations
    assert rules[("TOPIC", "PREFIXED", "shop.")].operations  # the DLQ, workflow topics
    assert rules[("GROUP", "LITERAL", "shop")].operations == ("DESCRIBE", "READ")
    assert rules[("GROUP", "PREFIXED", "shop-")].operations == ("DESCRIBE",)  # restorer, queries
    assert rules[("TRANSACTIONAL_ID", "PREFIXED", "shop-")].operations == ("DESCRIBE", "WRITE")
    assert not any(r[2] == "_streamflow_schemas" for r in rules), "no Avro: no registry"


def test_the_command_prints_kafka_acls_lines_and_json(tmp_path) -> None:
    app_file = tmp_path / "shop.py"
    app_file.write_text(
        "from streamflow import App\napp = App('shop')\n"
        "app.stream(app.topic('orders')).to(app.topic('copies'))\n"
    )
    lines = CliRunner().invoke(main, ["acls", str(app_file), "--bootstrap", "127.0.0.1:9093"])
    assert lines.exit_code == 0, lines.output
    assert (
        "kafka-acls.sh --bootstrap-server 127.0.0.1:9093 --add --allow-principal User:shop "
        "--operation Describe --operation Read --topic orders"
    ) in lines.output
    assert "--transactional-id shop- --resource-pattern-type prefixed" in lines.output
    data = orjson.loads(CliRunner().invoke(main, ["acls", str(app_file), "--json"]).output)
    groups = {
        (d["pattern_type"], d["name"]): d["operations"]
        for d in data
        if d["resource_type"] == "GROUP"
    }
    assert groups == {
        ("LITERAL", "shop"): ["DESCRIBE", "READ"],
        ("PREFIXED", "shop-"): ["DESCRIBE"],
    }
