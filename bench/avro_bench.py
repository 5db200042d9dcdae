"""Avro through the wire format (5-byte header + body), records/s each way, against fastavro.

Rows, each measured in its own process (so peak RSS is that row's own), on the same 10-field
record (strings, long, int, double, enum, boolean, optional string, a timestamp as long):

* streamflow: the ``avro()`` serde's functions, bound to a schema id, as the engine calls them;
* naive fastavro loop: a new ``BytesIO`` and one ``schemaless_writer`` / ``schemaless_reader``
  call per record, given the schema as loaded from its ``.avsc`` (the loop the issue measures);
* fastavro, parsed schema reused: the same loop with ``parse_schema`` done once, the stronger
  baseline, shown so the speed-up is not flattered.

Plus one row each for a record written with the previous schema version (resolved to the
current one). The cyclic GC is frozen with a raised threshold in every row alike, as the worker
does. Run: ``python bench/avro_bench.py`` (prints the rows), or ``make bench``.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORDS = 100_000
REPEATS = 3

CURRENCY = {
    "type": "enum",
    "name": "Currency",
    "namespace": "bench",
    "symbols": ["EUR", "USD", "GBP"],
    "default": "EUR",
}
ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "bench",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "customer", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "quantity", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "currency", "type": "bench.Currency"},
        {"name": "paid", "type": "boolean"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "placed_at", "type": "long"},
        {"name": "region", "type": "string"},
    ],
}
# The previous version: no region yet (read as its default), quantity still an int.
ORDER_V0 = {**ORDER_V1, "fields": [f for f in ORDER_V1["fields"] if f["name"] != "region"]}
ORDER_V1["fields"][-1] = {"name": "region", "type": "string", "default": "eu-west-1"}

ENCODE = "avro encode 10-field record (wire format)"
DECODE = "avro decode 10-field record (wire format)"
RESOLVE = "avro decode 10-field record written with the previous schema version"
ROWS = {
    "encode-streamflow": (ENCODE, "streamflow"),
    "encode-naive": (ENCODE, "naive fastavro loop"),
    "encode-parsed": (ENCODE, "fastavro, parsed schema reused"),
    "decode-streamflow": (DECODE, "streamflow"),
    "decode-naive": (DECODE, "naive fastavro loop"),
    "decode-parsed": (DECODE, "fastavro, parsed schema reused"),
    "resolve-streamflow": (RESOLVE, "streamflow"),
    "resolve-naive": (RESOLVE, "naive fastavro loop"),
}


def records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"o-{i:08d}",
            "customer": f"customer-{i % 1000}",
            "amount_cents": i * 37,
            "quantity": i % 17,
            "price": i * 0.25,
            "currency": ("EUR", "USD", "GBP")[i % 3],
            "paid": i % 2 == 0,
            "note": None if i % 4 else "leave at the door",
            "placed_at": 1_700_000_000_000 + i * 1000,
            "region": "eu-west-1",
        }
        for i in range(n)
    ]


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _serdes(directory: Path) -> tuple[Any, Any, int, int]:
    """(v1 serde, v0 serde) bound to one in-memory registry, and their ids."""
    sys.path.insert(0, str(HERE.parent))
    from streamflow.serde.avro.serde import avro
    from streamflow.serde.registry.base import InMemorySchemaRegistry
    from streamflow.serde.registry.compatibility import CompatibilityMode

    registry = InMemorySchemaRegistry()
    out = []
    for version, schema in (("v0", ORDER_V0), ("v1", ORDER_V1)):
        path = directory / version
        path.mkdir()
        (path / "currency.avsc").write_text(json.dumps(CURRENCY))
        (path / "order.avsc").write_text(json.dumps(schema))
        serde = avro("bench.Order", schema_dir=path)
        schema_id = registry.register(
            "orders-value", serde.schema_text, default_mode=CompatibilityMode.BACKWARD
        ).id
        serde.bind(registry, schema_id)
        out.append((serde, schema_id))
    (v0, v0_id), (v1, v1_id) = out
    return v1, v0, v1_id, v0_id


def measure(row: str, n: int = RECORDS, repeats: int = REPEATS) -> dict[str, Any]:
    """One row in this process: the median rate over ``repeats`` passes of ``n`` records."""
    from fastavro import parse_schema, schemaless_reader, schemaless_writer

    values = records(n)
    with tempfile.TemporaryDirectory() as tmp:
        v1, v0, _, _ = _serdes(Path(tmp))
    header = v1.serialize(values[0])[:5]
    raw_v1 = {**ORDER_V1, "fields": [*ORDER_V1["fields"]]}
    raw_v1["fields"][5] = {"name": "currency", "type": CURRENCY}  # self-contained, as loaded
    raw_v0 = {**ORDER_V0, "fields": [*ORDER_V0["fields"]]}
    raw_v0["fields"][5] = {"name": "currency", "type": CURRENCY}
    wire_v1 = [v1.serialize(v) for v in values]
    wire_v0 = [v0.serialize({k: x for k, x in v.items() if k != "region"}) for v in values]
    parsed_v1 = parse_schema(raw_v1)

    def naive_encode(schema: Any) -> Any:
        def run() -> None:
            for value in values:
                buf = io.BytesIO()
                buf.write(header)
                schemaless_writer(buf, schema, value)
                buf.getvalue()

        return run

    def naive_decode(data: list[bytes], writer: Any, reader: Any) -> Any:
        def run() -> None:
            for item in data:
                buf = io.BytesIO(item)
                buf.seek(5)
                schemaless_reader(buf, writer, reader)

        return run

    def serde_loop(fn: Any, data: list[Any]) -> Any:
        def run() -> None:
            for item in data:
                fn(item)

        return run

    loops = {
        "encode-streamflow": serde_loop(v1.serialize, values),
        "encode-naive": naive_encode(raw_v1),
        "encode-parsed": naive_encode(parsed_v1),
        "decode-streamflow": serde_loop(v1.deserialize, wire_v1),
        "decode-naive": naive_decode(wire_v1, raw_v1, raw_v1),
        "decode-parsed": naive_decode(wire_v1, parsed_v1, None),
        "resolve-streamflow": serde_loop(v1.deserialize, wire_v0),
        "resolve-naive": naive_decode(wire_v0, raw_v0, raw_v1),
    }
    loop = loops[row]
    assert v1.deserialize(wire_v0[1])["region"] == "eu-west-1"  # the resolution really runs
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    loop()  # warm: compiled resolvers, caches, allocator
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        loop()
        rates.append(n / (time.perf_counter() - start))
    rates.sort()
    workload, system = ROWS[row]
    return {
        "workload": workload,
        "system": system,
        "records": n,
        "records_per_s": round(rates[len(rates) // 2], 1),
        "p50_ms": None,
        "p99_ms": None,
        "peak_rss_mb": round(_rss_mb(), 1),
    }


def run(n: int = RECORDS) -> list[dict[str, Any]]:
    """Every row, each in a fresh process; rows gain ``speedup_vs_naive`` (same workload)."""
    rows = []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])
        ),
    }
    for row in ROWS:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--row", row, "--records", str(n)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    naive = {
        r["workload"]: r["records_per_s"] for r in rows if r["system"] == "naive fastavro loop"
    }
    for r in rows:
        if r["system"] != "naive fastavro loop":
            r["speedup_vs_naive"] = round(r["records_per_s"] / naive[r["workload"]], 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", choices=sorted(ROWS))
    parser.add_argument("--records", type=int, default=RECORDS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(args.row, args.records)))
        return
    for row in run(args.records):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
