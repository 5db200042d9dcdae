"""streamflow's side of ``bench/peers_bench.py``: one worker process, one processing thread,
exactly_once, 100 ms commit interval, the real DSL; runs until SIGTERM.

Output formats (read by the bench's outside consumer): ``count``: key = the str key, value =
the count as JSON; ``hopping``: key = ``windowed_serde`` (the key's bytes, then window start and
end as two 8-byte big-endian longs), value = the count as JSON; joins: key = the str key,
value = ``{"l": LEFT, "r": RIGHT}`` as JSON.

Usage: peers_streamflow.py BOOTSTRAP APP_ID STATE_DIR ROW OUT IN [IN2] [GRACE_MS]
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamflow import App, hopping
from streamflow.runtime.worker import Worker
from streamflow.serde.base import STR
from streamflow.topology.windows import windowed_serde


def joined(left: object, right: object) -> dict:
    return {"l": left, "r": right}


def main() -> None:
    bootstrap, app_id, state_dir, row, out, source = sys.argv[1:7]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app = App(
        app_id,
        bootstrap=bootstrap,
        guarantee="exactly_once",
        commit_interval=timedelta(milliseconds=100),
        state_dir=state_dir,
    )
    stream = app.stream(app.topic(source))
    sink = app.topic(out, key=windowed_serde(STR) if row == "hopping" else "str")
    if row == "count":
        stream.count("counts").to(sink)
    elif row == "hopping":
        windows = hopping(timedelta(minutes=5), timedelta(minutes=1))
        stream.window(windows).count("hopping-counts").to(sink)
    elif row == "table-join":
        table = app.table(app.topic(sys.argv[7]))
        stream.join(table, joined).to(sink)
    elif row == "stream-join":
        right = app.stream(app.topic(sys.argv[7]))
        grace = timedelta(milliseconds=int(sys.argv[8]))
        stream.join_stream(right, joined, within=timedelta(seconds=1), grace=grace).to(sink)
    else:
        raise SystemExit(f"unknown row {row}")
    print("streamflow started", file=sys.stderr, flush=True)
    Worker(app.topology, app.config, app.dead_letter_topic).run()


if __name__ == "__main__":
    main()
