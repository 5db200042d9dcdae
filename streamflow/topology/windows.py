"""Time windows: which windows a record's event time falls in, and how windows are keyed.

``tumbling(size)`` windows do not overlap: each record is in exactly one. ``hopping(size, every)``
windows start every ``every`` and last ``size``, so a record is in ``size / every`` of them.
``sliding(size)`` windows are cut where a key's records are, not on a clock: one window per set
of records less than ``size`` apart (``sliding_nodes``).
Windows are aligned to the epoch (a 5-minute window starts at :00, :05, ...), so every worker and
every replay cuts the same windows.

``grace`` is how long after a window's end a record of it may still arrive out of order: the
window *closes* once the task's stream time (the largest event time it has seen) passes
``end + grace``. A record whose every window is closed is late: it goes to the dead-letter topic
with the reason, or is counted and dropped if the stream says ``late="drop"``.

In a window store the key is the window's start (8 bytes, big-endian, sign-flipped so negative
times sort first) followed by the record key's bytes: RocksDB then keeps windows in the order
they close, and closing them is one range scan from the first key.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from streamflow.errors import ConfigError, StreamflowError
from streamflow.serde.base import Serde

if TYPE_CHECKING:
    from streamflow.state.store import KeyValueStore
    from streamflow.topology.nodes import ProcessorRuntime

log = logging.getLogger(__name__)

_START = struct.Struct(">Q")
_BOUNDS = struct.Struct(">qq")
_SIGN = 1 << 63


class LateRecord(StreamflowError):
    """A record arrived after every window it belongs to had closed (its reason in the DLQ)."""


_TIME_KEY = "stream_time"
NO_TIME = -(1 << 62)
"""Stream time before any record."""


class StreamTimeState:
    """A time-aware processor's stream time in one task: the largest event time it has seen,
    kept in memory per record and written to its store once per commit (``save_time``), so a
    replay after a restore or an abort (``forget``) decides "late" as the first run did."""

    def __init__(self, rt: ProcessorRuntime, time_store: str) -> None:
        self.times = rt.store(time_store)
        self.loaded = False
        self.stream_time = NO_TIME
        self.saved_time = self.stream_time
        rt.on_prepare_commit(self.save_time)
        rt.on_abort(self.forget)

    def load_time(self) -> None:
        """On first use, after the stores were restored (not at build time: restore comes
        after the task is built)."""
        saved = self.times.get(_TIME_KEY)
        self.stream_time = self.saved_time = self.stream_time if saved is None else int(saved)
        self.loaded = True

    def save_time(self) -> None:
        if self.loaded and self.stream_time != self.saved_time:
            self.times.put(_TIME_KEY, self.stream_time)
            self.saved_time = self.stream_time

    def forget(self) -> None:
        """The cycle aborted: the stores dropped its writes; reload what they now hold."""
        self.loaded = False


def late_record(
    rt: ProcessorRuntime, late: str, reason: LateRecord, stage: str, processor: str, dropped: int
) -> int:
    """A late record, as its processor's ``late`` says: to the dead-letter topic with the
    reason, or (``"drop"``) counted, the first few and every 1000th logged. Returns the count
    of dropped records."""
    if late == "drop":
        dropped += 1
        if dropped <= 5 or dropped % 1000 == 0:
            log.warning("dropped late record #%d: %s", dropped, reason)
        return dropped
    rt.dead_letter(rt.msg, reason, stage, processor)
    return dropped


class Windowed(NamedTuple):
    """The key of a windowed result: the record key and the window ``[start, end)`` in ms."""

    key: Any
    start: int
    end: int


def _ms(value: timedelta | int | float, what: str) -> int:
    ms = value.total_seconds() * 1000 if isinstance(value, timedelta) else float(value)
    if ms != int(ms):
        raise ConfigError(f"window {what} must be a whole number of milliseconds, not {value!r}")
    return int(ms)


@dataclass(frozen=True)
class TimeWindows:
    """Fixed-size windows every ``advance_ms`` (``advance_ms == size_ms``: tumbling)."""

    size_ms: int
    advance_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ConfigError(f"a window's size must be positive, not {self.size_ms} ms")
        if not 0 < self.advance_ms <= self.size_ms:
            raise ConfigError(
                f"a hopping window must advance by more than 0 and at most its size "
                f"({self.size_ms} ms), not {self.advance_ms} ms"
            )
        if self.grace_ms < 0:
            raise ConfigError(f"grace must not be negative, not {self.grace_ms} ms")

    @property
    def kind(self) -> str:
        return "tumbling" if self.advance_ms == self.size_ms else "hopping"

    def describe(self) -> str:
        every = "" if self.kind == "tumbling" else f" every {self.advance_ms} ms"
        return f"{self.kind} {self.size_ms} ms{every}, grace {self.grace_ms} ms"

    def starts(self, timestamp: int) -> range:
        """Start of every window that contains ``timestamp``, oldest first."""
        # Starts are multiples of the advance in (timestamp - size, timestamp]; Python's %
        # floors, so negative times work too.
        last = timestamp - timestamp % self.advance_ms
        lowest = timestamp - self.size_ms + 1
        first = lowest + (-lowest) % self.advance_ms
        return range(first, last + 1, self.advance_ms)


@dataclass(frozen=True)
class SessionWindows:
    """Per key, records no more than ``gap_ms`` apart form one session; a session closes once
    stream time passes its last record's time + gap + grace."""

    gap_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        if self.gap_ms <= 0:
            raise ConfigError(f"a session's inactivity gap must be positive, not {self.gap_ms} ms")
        if self.grace_ms < 0:
            raise ConfigError(f"grace must not be negative, not {self.grace_ms} ms")

    @property
    def kind(self) -> str:
        return "session"

    def describe(self) -> str:
        return f"session, gap {self.gap_ms} ms, grace {self.grace_ms} ms"


@dataclass(frozen=True)
class SlidingWindows:
    """Windows ``[start, start + size_ms)`` placed by a key's records: each record ends one
    window (it is the last record in it) and starts one right after it (the window that no
    longer holds it), so every distinct set of records less than ``size_ms`` apart has a window
    of its own, and no window is empty."""

    size_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ConfigError(f"a sliding window's size must be positive, not {self.size_ms} ms")
        if self.grace_ms < 0:
            raise ConfigError(f"grace must not be negative, not {self.grace_ms} ms")

    @property
    def kind(self) -> str:
        return "sliding"

    def describe(self) -> str:
        return f"sliding {self.size_ms} ms, grace {self.grace_ms} ms"


def sliding(size: timedelta | int, *, grace: timedelta | int = 0) -> SlidingWindows:
    """Windows over a key's records less than ``size`` apart (one per distinct set of them);
    each is ``[start, end)`` with ``end - start == size``, like the other time windows."""
    return SlidingWindows(_ms(size, "size"), _ms(grace, "grace"))


def session(gap: timedelta | int, *, grace: timedelta | int = 0) -> SessionWindows:
    """Sessions of a key's records separated by less than ``gap``. In results, ``end`` is the
    time of the session's last record (a session is ``[start, end]``)."""
    return SessionWindows(_ms(gap, "gap"), _ms(grace, "grace"))


def tumbling(size: timedelta | int, *, grace: timedelta | int = 0) -> TimeWindows:
    """Windows of ``size`` (a timedelta, or ms) that do not overlap."""
    ms = _ms(size, "size")
    return TimeWindows(ms, ms, _ms(grace, "grace"))


def hopping(
    size: timedelta | int, every: timedelta | int, *, grace: timedelta | int = 0
) -> TimeWindows:
    """Windows of ``size`` starting ``every`` (overlapping when ``every < size``)."""
    return TimeWindows(_ms(size, "size"), _ms(every, "advance"), _ms(grace, "grace"))


def store_key(start: int, key_bytes: bytes) -> bytes:
    """A window store's key: the window start, then the record key."""
    return _START.pack(start + _SIGN) + key_bytes


def store_start(encoded: bytes) -> int:
    return int(_START.unpack_from(encoded)[0]) - _SIGN


_KEY_LENGTH = struct.Struct(">I")


def key_prefix(kb: bytes) -> bytes:
    """A record key as the first part of a composite store key: length-prefixed, so one key's
    entries are one prefix scan and never run into a longer key that starts with it."""
    return _KEY_LENGTH.pack(len(kb)) + kb


def start_prefix(start: int) -> bytes:
    """The smallest store key of windows that start at ``start`` (a range bound)."""
    return _START.pack(start + _SIGN)


def windowed_serde(inner: Serde) -> Serde:
    """The serde of windowed results' keys: the key's own bytes, then start and end (16 bytes),
    so a consumer that knows the key serde can read both."""
    serialize, deserialize = inner.serialize, inner.deserialize

    def write(windowed: Windowed) -> bytes:
        return serialize(windowed.key) + _BOUNDS.pack(windowed.start, windowed.end)

    def read(data: bytes) -> Windowed:
        start, end = _BOUNDS.unpack_from(data, len(data) - 16)
        return Windowed(deserialize(data[:-16]), start, end)

    return Serde(f"windowed<{inner.name}>", write, read)


def fetch_windows(
    table: KeyValueStore, key: Any, time_from: int | None = None, time_to: int | None = None
) -> list[tuple[Windowed, Any]]:
    """A key's windows in a table of windowed results (``stream.to_table``), oldest first:
    those starting in ``[time_from, time_to]`` (either bound open when None). One prefix scan
    of the key's bytes: windowed keys are the key's bytes, then start and end."""
    kb = table.key_serializer(Windowed(key, 0, 0))[:-16]
    lo = -(1 << 63) if time_from is None else time_from
    hi = (1 << 63) - 1 if time_to is None else time_to
    return [
        (w, value) for w, value in table.prefix_items(kb) if w.key == key and lo <= w.start <= hi
    ]
