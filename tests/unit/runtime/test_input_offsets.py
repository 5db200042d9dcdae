"""The one owner of a task's input offsets: committed, staged, held (runtime/input_offsets)."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING

from streamflow.runtime.input_offsets import InputOffsets


def test_a_commit_makes_the_staged_offsets_the_ones_a_rewind_returns_to() -> None:
    offsets = InputOffsets()
    offsets.start_at("in", 7)
    offsets.stage("in", 12)
    assert list(offsets.staged()) == [("in", 12)]
    offsets.commit_staged()
    assert offsets.committed("in") == 12 and not offsets.has_staged
    offsets.stage("in", 20)
    assert offsets.drop_staged() == [("in", 12)], "an abort seeks back to the last commit"
    assert offsets.committed("in") == 12 and not offsets.has_staged


def test_nothing_fetched_yet_restages_the_committed_offset_or_nothing_at_all() -> None:
    offsets = InputOffsets()
    offsets.start_at("in", 5)
    offsets.start_at("fresh", -1001)  # no committed offset: from the beginning
    offsets.stage("in", -1001)
    offsets.stage("fresh", -1001)
    assert list(offsets.staged()) == [("in", 5)]  # keeps the generation in the transaction
    assert offsets.committed("fresh") == OFFSET_BEGINNING


def test_a_hold_decides_the_committable_offset_of_out_of_order_records() -> None:
    offsets = InputOffsets()
    offsets.start_at("steps", 0)
    offsets.hold("steps", lambda position: min(position, 3))  # command 3 still runs
    offsets.stage("steps", 10)
    assert list(offsets.staged()) == [("steps", 3)]
    with pytest.raises(RuntimeError, match="held twice"):
        offsets.hold("steps", lambda position: position)
