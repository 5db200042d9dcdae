"""A stream whose processor is slow (SF_MAP_SLEEP seconds per record), for fault tests:
``in-<app>`` → map → ``out-<app>``, one output per input, exactly once."""

from __future__ import annotations

import os
import time

from streamflow import App

NAME = os.environ["SF_TEST_APP"]
SLEEP = float(os.environ.get("SF_MAP_SLEEP", "0.002"))

app = App(NAME)
source = app.topic(f"in-{NAME}", partitions=int(os.environ.get("SF_TEST_PARTITIONS", "2")))
sink = app.topic(f"out-{NAME}", partitions=1)


def slow(value: dict) -> dict:
    time.sleep(SLEEP)
    return value


app.stream(source).map(slow).to(sink)
