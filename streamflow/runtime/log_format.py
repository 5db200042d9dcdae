"""How a worker's log lines look: one line per event, as text or as JSON (``--log-format``).

JSON lines are for log shippers (Loki, Elasticsearch, CloudWatch): every line is one object
with ``ts`` (ISO 8601, UTC), ``level``, ``logger`` and ``msg``, plus ``exc`` when an exception
is logged, so a multi-line traceback never splits an event into several lines.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """A ``logging`` record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = record.stack_info
        return orjson.dumps(event, default=str).decode()


def configure(level: int, log_format: str = "text") -> None:
    """Log to stderr at ``level``, as ``text`` or ``json`` lines; replaces earlier handlers."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class ProgressLine:
    """One line rewritten in place on a terminal (restores, replays, rebuilds a person
    watches); nothing at all when stderr is not a terminal (a log file, a pipe, a container),
    where the periodic log lines say the same."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.enabled = self.stream.isatty()
        self._shown = False

    def show(self, done: int, estimate: int | None = None) -> None:
        if not self.enabled:
            return
        share = f" ({100 * done / estimate:.0f}%)" if estimate else ""
        of = f" / ~{estimate:,}" if estimate else ""
        self.stream.write(f"\r{self.label}: {done:,}{of}{share}   ")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
