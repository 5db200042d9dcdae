"""Quix Streams' side of ``bench/peers_bench.py``, run with the Quix venv's Python (``make
bench`` installs ``quixstreams`` there, never into the package's venv): one process, one
processing thread, ``processing_guarantee="exactly-once"``, ``commit_interval=0.1``, the
rest at Quix's defaults (changelog topics on); runs until SIGTERM.

Output formats (read by the bench's outside consumer): ``count``: key = the str key, value =
the count as JSON (Quix has no keyed count outside windows: a stateful ``apply``, as its docs
show); ``hopping``: key = the str key, value = ``{"start": MS, "end": MS, "value": COUNT}``
(``hopping_window(...).count().current()``); joins: key = the str key, value = ``{"l": LEFT,
"r": RIGHT}``. The stream–table join is ``join_asof`` (the table's records are stamped before
every stream record), the stream–stream join ``join_interval`` with ±1 s.

Usage: peers_quix.py BOOTSTRAP APP_ID STATE_DIR ROW OUT IN [IN2] [GRACE_MS]
"""

from __future__ import annotations

import sys
from datetime import timedelta

from quixstreams import Application, State


def joined(left: object, right: object) -> dict:
    return {"l": left, "r": right}


def count(_value: object, state: State) -> int:
    n = state.get("count", 0) + 1
    state.set("count", n)
    return n


def main() -> None:
    bootstrap, app_id, state_dir, row, out, source = sys.argv[1:7]
    app = Application(
        broker_address=bootstrap,
        consumer_group=app_id,
        state_dir=state_dir,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=0.1,
        loglevel="WARNING",
    )

    def topic(name: str):
        return app.topic(
            name, key_deserializer="str", value_deserializer="json", key_serializer="str"
        )

    sdf = app.dataframe(topic(source))
    if row == "count":
        sdf = sdf.apply(count, stateful=True)
    elif row == "hopping":
        windows = sdf.hopping_window(timedelta(minutes=5), timedelta(minutes=1))
        sdf = windows.count().current()
    elif row == "table-join":
        table = app.dataframe(topic(sys.argv[7]))
        sdf = sdf.join_asof(table, how="inner", on_merge=joined)
    elif row == "stream-join":
        right = app.dataframe(topic(sys.argv[7]))
        grace = int(sys.argv[8])
        sdf = sdf.join_interval(
            right,
            how="inner",
            on_merge=joined,
            grace_ms=grace,
            backward_ms=1000,
            forward_ms=1000,
        )
    else:
        raise SystemExit(f"unknown row {row}")
    sdf.to_topic(app.topic(out, key_serializer="str", value_serializer="json"))
    print("quix started", file=sys.stderr, flush=True)
    app.run()


if __name__ == "__main__":
    main()
