"""The stream DSL, run through the in-process driver against an independent recomputation."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from streamflow import App, ProcessorContext, Record, TopologyError
from streamflow.operate.dead_letter_format import HEADER_PROCESSOR, HEADER_STAGE
from streamflow.testing import TestDriver


def _orders_app() -> App:
    app = App("orders")
    orders = app.topic("orders")
    totals = app.topic("totals")
    (
        app.stream(orders)
        .filter(lambda o: o["amount"] > 0)
        .key_by(lambda o: o["customer"], name="by-customer")
        .aggregate("totals", initial=lambda: 0, fn=lambda acc, o: acc + o["amount"])
        .to(totals)
    )
    return app


@pytest.mark.parametrize("partitions", [1, 4])
def test_key_by_aggregate_matches_plain_python_totals(partitions: int) -> None:
    inputs = [{"customer": f"c{i % 7}", "amount": (i * 37) % 11 - 2} for i in range(300)]
    truth: dict[str, int] = defaultdict(int)
    updates: dict[str, list[int]] = defaultdict(list)
    for o in inputs:
        if o["amount"] > 0:
            truth[o["customer"]] += o["amount"]
            updates[o["customer"]].append(truth[o["customer"]])
    with TestDriver(_orders_app(), partitions=partitions) as driver:
        for i, o in enumerate(inputs):
            driver.pipe("orders", f"o{i}", o)
        assert driver.store("totals") == dict(truth)
        seen: dict[str, list[int]] = defaultdict(list)
        for key, value in driver.read("totals"):
            seen[key].append(value)
        assert seen == updates  # one update per accepted record, in order per key


def test_map_flat_map_branch_route_each_record_to_first_matching_branch() -> None:
    app = App("words")
    lines = app.topic("lines")
    short, long_, rest = app.topic("short"), app.topic("long"), app.topic("rest")
    words = app.stream(lines).flat_map(str.split).map(str.lower)
    a, b, c = words.branch(lambda w: len(w) <= 3, lambda w: len(w) >= 6, otherwise=True)
    a.to(short)
    b.to(long_)
    c.to(rest)
    with TestDriver(app) as driver:
        driver.pipe("lines", "l1", "The quick Brown fox JUMPED over lazy dogs")
        assert [v for _, v in driver.read("short")] == ["the", "fox"]
        assert [v for _, v in driver.read("long")] == ["jumped"]
        assert [v for _, v in driver.read("rest")] == ["quick", "brown", "over", "lazy", "dogs"]


def test_count_and_reduce_keep_separate_stores() -> None:
    app = App("stats")
    events = app.topic("events")
    stream = app.stream(events)
    stream.count("counts").to(app.topic("counts-out"))
    stream.reduce("maxima", max).to(app.topic("max-out"))
    values = [5, 3, 9, 1, 9, 12, 0]
    with TestDriver(app) as driver:
        for v in values:
            driver.pipe("events", "k", v)
        assert driver.store("counts") == {"k": len(values)}
        assert driver.store("maxima") == {"k": max(values)}
        assert [v for _, v in driver.read("max-out")] == [5, 5, 9, 9, 9, 12, 12]


def test_stream_table_join_enriches_with_latest_row_and_left_join_keeps_misses() -> None:
    app = App("enrich")
    customers = app.table(app.topic("customers"), store="customers")
    orders = app.topic("orders")
    app.stream(orders).join(customers, lambda o, c: {**o, "name": c["name"]}).to(app.topic("inner"))
    app.topic("orders2")
    app.stream("orders2").join(customers, lambda o, c: c and c["name"], left=True).to(
        app.topic("left")
    )
    with TestDriver(app, partitions=3) as driver:
        driver.pipe("customers", "c1", {"name": "Ada"})
        driver.pipe("orders", "c1", {"amount": 3})
        driver.pipe("orders", "c2", {"amount": 4})
        driver.pipe("customers", "c1", {"name": "Ada L."})
        driver.pipe("orders", "c1", {"amount": 5})
        driver.pipe("customers", "c1", None)
        driver.pipe("orders2", "c1", {})
        assert driver.read("inner") == [
            ("c1", {"amount": 3, "name": "Ada"}),
            ("c1", {"amount": 5, "name": "Ada L."}),
        ]
        assert driver.read("left") == [("c1", None)]
        assert driver.store("customers") == {}


def test_process_reads_and_writes_its_store_and_forwards_many() -> None:
    app = App("dedupe")
    app.store("seen")
    out = app.topic("out")

    def dedupe(record: Record, ctx: ProcessorContext) -> None:
        seen = ctx.store("seen")
        if seen.get(record.value["id"]) is None:
            seen.put(record.value["id"], record.offset)
            ctx.forward(record.key, record.value)
            ctx.forward(record.key, {"first_offset": record.offset}, timestamp=42)

    app.stream(app.topic("in")).process(dedupe, stores=["seen"]).to(out)
    ids = ["a", "b", "a", "c", "b", "a"]
    with TestDriver(app) as driver:
        for i in ids:
            driver.pipe("in", "k", {"id": i})
        forwarded = [v for _, v in driver.read("out")]
        assert [v["id"] for v in forwarded if "id" in v] == list(dict.fromkeys(ids))
        assert [m.timestamp()[1] for m in driver.messages("out")][1::2] == [42, 42, 42]
        assert driver.store("seen") == {"a": 0, "b": 1, "c": 3}


def test_poison_records_go_to_dlq_with_reason_and_processing_continues() -> None:
    with TestDriver(_orders_app()) as driver:
        driver.pipe("orders", "o1", {"customer": "x", "amount": 2})
        driver.pipe_raw("orders", b"o2", b"{not json")
        driver.pipe("orders", "o3", {"customer": "x"})  # KeyError in filter
        driver.pipe("orders", "o4", {"customer": "x", "amount": 3})
        dead = driver.dead_letters()
        assert [m.value() for m in dead] == [b"{not json", b'{"customer":"x"}']
        headers = [dict(m.headers()) for m in dead]
        assert headers[0][HEADER_STAGE] == b"deserialize"
        assert headers[1][HEADER_PROCESSOR] == b"filter:filter-1"
        assert headers[1]["streamflow.source.offset"] == b"2"
        assert driver.store("totals") == {"x": 5}


def test_sub_topologies_split_at_repartition_topics() -> None:
    app = _orders_app()
    subs = app.topology.sub_topologies()
    assert [[t.name for t in s.sources] for s in subs] == [
        ["orders"],
        ["orders-by-customer-repartition"],
    ]
    assert [s.name for s in subs[1].stores] == ["totals"]
    text = app.describe()
    assert "orders-totals-changelog" in text and "Sub-topology 1" in text


def test_declaring_a_store_twice_is_a_clear_error() -> None:
    app = App("dup")
    app.store("s")
    with pytest.raises(TopologyError, match="store 's' is declared twice"):
        app.store("s")


def test_word_count_equals_counter() -> None:
    app = App("wc")
    (
        app.stream(app.topic("text"))
        .flat_map(str.split)
        .key_by(lambda w: w, name="words")
        .count("counts")
        .to(app.topic("wc-out"))
    )
    text = ["a b a", "c a b", "d"] * 20
    with TestDriver(app, partitions=3) as driver:
        for i, line in enumerate(text):
            driver.pipe("text", str(i), line)
        assert driver.store("counts") == dict(Counter(w for line in text for w in line.split()))


def test_outputs_carry_the_input_timestamp_and_dlq_records_their_headers() -> None:
    app = _orders_app()
    with TestDriver(app) as driver:
        driver.pipe("orders", "o1", {"customer": "x", "amount": 2}, timestamp=1_234)
        driver.pipe_raw("orders", b"o2", b"bad", timestamp=5_678, headers=[("trace", b"t-1")])
        assert [m.timestamp()[1] for m in driver.messages("totals")] == [1_234]
        (dead,) = driver.dead_letters()
        assert ("trace", b"t-1") in dead.headers()
