"""The crash tests' topology: a keyed count that remembers the last sequence number per key.

Names come from the environment so each test run gets its own app, topics and group.
"""

from __future__ import annotations

import os

from streamflow import App

app = App(
    os.environ["SF_TEST_APP"],
    guarantee=os.environ.get("SF_TEST_GUARANTEE", "exactly_once"),
    commit_interval=float(os.environ.get("SF_TEST_COMMIT_INTERVAL", "0.1")),
)
source = app.topic(os.environ["SF_TEST_INPUT"])
counts = app.topic(os.environ["SF_TEST_OUTPUT"])


FIXED = bool(os.environ.get("SF_TEST_FIXED"))
"""Set: the bug is fixed and poison events count like the others (dead-letter replay tests)."""


def count(acc: dict, event: dict) -> dict:
    if event.get("poison") and not FIXED:
        raise ValueError(f"poison event {event['seq']}")
    return {"count": acc["count"] + 1, "seq": event["seq"]}


app.stream(source).aggregate("counts", initial=lambda: {"count": 0, "seq": -1}, fn=count).to(counts)
