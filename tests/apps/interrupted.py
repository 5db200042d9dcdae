"""A stream whose processor raises KeyboardInterrupt once, on the record SF_INTERRUPT_AT, the
first time it sees it (a marker file remembers): the worker stops mid-batch on an error."""

from __future__ import annotations

import os
from pathlib import Path

from streamflow import App

NAME = os.environ["SF_TEST_APP"]
MARKER = Path(os.environ["SF_INTERRUPT_MARKER"])
AT = int(os.environ.get("SF_INTERRUPT_AT", "50"))

app = App(NAME)
source = app.topic(f"in-{NAME}", partitions=1)
sink = app.topic(f"out-{NAME}", partitions=1)


def check(value: dict) -> dict:
    if value["n"] == AT and not MARKER.exists():
        MARKER.write_text("interrupted once")
        raise KeyboardInterrupt
    return value


app.stream(source).map(check).to(sink)
