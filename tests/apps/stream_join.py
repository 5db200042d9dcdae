"""The stream-stream join crash test's topology: page views left-joined with clicks of the same
user at most ``SF_JOIN_WITHIN_MS`` apart in event time (the value's ``at``); a view no click
joined is emitted with None once it can no longer join. Names come from the environment so each
run gets its own app, topics and group."""

from __future__ import annotations

import os
from datetime import timedelta

from streamflow import App

WITHIN = timedelta(milliseconds=int(os.environ["SF_JOIN_WITHIN_MS"]))
GRACE = timedelta(milliseconds=int(os.environ["SF_JOIN_GRACE_MS"]))

app = App(os.environ["SF_TEST_APP"], commit_interval=0.1)
views = app.topic(os.environ["SF_TEST_LEFT"])
clicks = app.topic(os.environ["SF_TEST_RIGHT"])
pairs = app.topic(os.environ["SF_TEST_OUTPUT"])

(
    app.stream(views, timestamp="at")
    .join_stream(
        app.stream(clicks, timestamp="at"),
        lambda view, click: {"view": view["seq"], "click": None if click is None else click["seq"]},
        within=WITHIN,
        grace=GRACE,
        how="left",
    )
    .to(pairs)
)
