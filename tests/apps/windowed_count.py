"""The windowed crash test's topology: clicks per user in hopping windows, emitted once each
when the window closes. Event time comes from the value's ``at`` field. Names come from the
environment so each run gets its own app, topics and group."""

from __future__ import annotations

import os

from streamflow import App, hopping
from streamflow.serde.base import STR
from streamflow.topology.windows import windowed_serde

SIZE_MS = int(os.environ["SF_WIN_SIZE_MS"])
EVERY_MS = int(os.environ["SF_WIN_EVERY_MS"])
GRACE_MS = int(os.environ["SF_WIN_GRACE_MS"])

app = App(os.environ["SF_TEST_APP"], commit_interval=0.1)
clicks = app.topic(os.environ["SF_TEST_INPUT"])
counts = app.topic(os.environ["SF_TEST_OUTPUT"], key=windowed_serde(STR))

(
    app.stream(clicks, timestamp="at")
    .window(hopping(SIZE_MS, EVERY_MS, grace=GRACE_MS))
    .count("clicks-per-window", emit="close")
    .to(counts)
)
