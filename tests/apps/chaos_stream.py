"""The chaos suite's stream: a repartition hop and an aggregate. Each input carries its key's
sequence number; the aggregate keeps the count and the sum of sequence numbers, so the checker
can tell a lost record (count short), a doubled one (count long) and a wrong one (sum off)."""

from __future__ import annotations

import os

from streamflow import App

NAME = os.environ["SF_TEST_APP"]
app = App(NAME)
source = app.topic(f"in-{NAME}")
sink = app.topic(f"out-{NAME}")


def add(acc: dict, event: dict) -> dict:
    if event.get("poison"):
        raise ValueError(f"poison {event['id']}")
    return {"count": acc["count"] + 1, "sum": acc["sum"] + event["seq"]}


(
    app.stream(source)
    .key_by(lambda event: event["key"], name="by-key")
    .aggregate("totals", initial=lambda: {"count": 0, "sum": 0}, fn=add)
    .to(sink)
)
