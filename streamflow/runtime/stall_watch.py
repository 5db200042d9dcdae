"""A loop that stops turning leaves its stacks in the log.

A worker whose main thread is stuck in a call (a librdkafka request that ignores its timeout,
a full producer queue) shows nothing: its partitions stay assigned and its log goes quiet
until ``max.poll.interval.ms`` expels it, minutes later. The fault suite has seen such
five-minute gaps and had nothing to read afterwards. So the loop re-arms a ``faulthandler``
timer as it turns; if it does not turn for ``after`` seconds, the timer's own thread writes
every thread's stack to stderr (the worker's log), once per stall, without stopping anything.

Re-arming restarts faulthandler's watchdog thread, so it happens at most every
``REARM_SECONDS``, not on every turn of a loop that turns thousands of times a second.
"""

from __future__ import annotations

import faulthandler
import sys
import time

STALL_SECONDS = 60.0
"""A loop turn this late is a stall: commits give up after the transaction timeout (10 s by
default), restores and drains work in slices of at most a second."""

REARM_SECONDS = 5.0


class StallWatch:
    """Re-armed by ``turn()`` each loop turn; ``close()`` when the loop ends."""

    def __init__(self, after: float = STALL_SECONDS) -> None:
        self.after = after
        self._rearm_at = 0.0
        self.armed = _can_dump()

    def turn(self) -> None:
        if not self.armed:
            return
        now = time.monotonic()
        if now >= self._rearm_at:
            self._rearm_at = now + REARM_SECONDS
            faulthandler.dump_traceback_later(self.after + REARM_SECONDS, repeat=False)

    def close(self) -> None:
        if self.armed:
            faulthandler.cancel_dump_traceback_later()
            self.armed = False


def _can_dump() -> bool:
    """faulthandler writes to a file descriptor: none under a runner that replaced stderr."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
