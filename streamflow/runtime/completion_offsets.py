"""Committable offsets of a partition whose records finish out of order.

Step attempts finish in any order, but a partition's committed offset says "everything below
is done". So the offset to commit is the lowest record not yet finished; records finished above
it are remembered elsewhere (a step task's done store) so a restart does not run them again.
"""

from __future__ import annotations

from collections import deque


class CompletionOffsets:
    """Offsets admitted in order, finished in any order; amortized O(1) per record."""

    __slots__ = ("_finished", "_order")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._finished: set[int] = set()

    def admit(self, offset: int) -> None:
        """``offset`` is being worked on; offsets arrive in increasing order."""
        self._order.append(offset)

    def finish(self, offset: int) -> None:
        order, finished = self._order, self._finished
        if order and order[0] == offset:
            order.popleft()
            while order and order[0] in finished:
                finished.discard(order.popleft())
        else:
            finished.add(offset)

    def lowest_unfinished(self) -> int | None:
        return self._order[0] if self._order else None

    def clear(self) -> None:
        self._order.clear()
        self._finished.clear()
