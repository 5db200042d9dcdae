"""Where a task stands in each of its source partitions: one owner for the offsets.

Three numbers per source topic move through a cycle, and each used to be written by a different
module (worker, task, commit cycle). Here they have one owner, with one method per event:

- ``committed``: the next offset the group has committed (where a rewind goes back to);
- ``staged``: the next offset this cycle will commit, filled in just before the commit from the
  consumer's position (or, for step partitions, from the lowest unfinished command);
- after a commit, ``staged`` becomes ``committed``; after an abort it is dropped and the caller
  seeks back to ``committed``.

Offsets are *next* offsets throughout (what Kafka stores), never "last processed".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING

Committable = Callable[[int], int]
"""Given the consumer's position in a partition, the next offset that may be committed."""


class InputOffsets:
    """The committed and staged offsets of one task's source partitions."""

    __slots__ = ("_committed", "_holds", "_staged")

    def __init__(self) -> None:
        self._committed: dict[str, int] = {}
        self._staged: dict[str, int] = {}
        self._holds: dict[str, Committable] = {}

    # -- what the group committed ----------------------------------------------------------------

    def start_at(self, topic: str, committed: int) -> None:
        """The group's committed offset for ``topic`` as learnt on assignment (negative: none,
        so the partition starts from its beginning)."""
        self._committed[topic] = committed if committed >= 0 else OFFSET_BEGINNING

    def committed(self, topic: str) -> int:
        """Where a rewind of ``topic`` goes back to."""
        return self._committed[topic]

    # -- records that finish out of order -------------------------------------------------------

    def hold(self, topic: str, committable: Committable) -> None:
        """Records of ``topic`` finish out of order (step commands): ``committable(position)``
        decides which offset may be committed when the consumer is at ``position``."""
        if topic in self._holds:
            raise RuntimeError(f"offsets of {topic!r} are held twice")
        self._holds[topic] = committable

    @property
    def held(self) -> bool:
        """Some topic's records finish out of order (its offsets are held)."""
        return bool(self._holds)

    def committable(self, topic: str, position: int) -> int:
        """The next offset to commit for ``topic``, given the consumer's position in it."""
        hold = self._holds.get(topic)
        return position if hold is None else hold(position)

    # -- one cycle ---------------------------------------------------------------------------------

    def stage(self, topic: str, position: int) -> None:
        """This cycle commits ``topic`` up to where the consumer is (``position``, its next
        offset), or where the last commit left it when nothing was fetched yet (negative)."""
        if position < 0:
            committed = self._committed.get(topic, -1)
            if committed >= 0:
                self._staged[topic] = committed
            return
        self._staged[topic] = self.committable(topic, position)

    @property
    def has_staged(self) -> bool:
        return bool(self._staged)

    def staged(self) -> Iterator[tuple[str, int]]:
        """(topic, next offset) to commit in this cycle's transaction."""
        return iter(self._staged.items())

    def commit_staged(self) -> None:
        """The transaction carrying the staged offsets committed."""
        self._committed.update(self._staged)
        self._staged.clear()

    def drop_staged(self) -> list[tuple[str, int]]:
        """The cycle aborted: the staged offsets are void. Returns where to seek each topic the
        cycle had staged (its committed offset)."""
        rewinds = [(topic, self._committed[topic]) for topic in self._staged]
        self._staged.clear()
        return rewinds
