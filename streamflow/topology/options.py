"""The string options of the stream API as types: a typo is a mypy error, not a surprise at
start (the functions still check them at run time, for untyped callers)."""

from __future__ import annotations

from typing import Literal

Emit = Literal["update", "close"]
"""A windowed aggregation emits every update, or each window's final value once it closes."""
Late = Literal["dead_letter", "drop"]
"""A record later than its windows' grace goes to the dead-letter topic, or is counted and
dropped."""
JoinHow = Literal["inner", "left", "outer"]
"""Which records of a join come out without a match (``outer``: tables and streams only)."""
StreamJoinHow = Literal["inner", "left"]
"""``stream.join(table, ...)``: only the stream's records come out."""
Clock = Literal["wall_clock", "stream_time"]
"""What a punctuation's schedule runs on."""
