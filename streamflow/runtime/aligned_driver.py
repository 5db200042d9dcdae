"""Drives the tasks that read several topics: their records go in timestamp order.

Each such task holds what it fetched in an ``AlignedInput`` (``aligned_input``) and processes
a record only once every topic of the task has something at or after it, or has reached its
end. This driver is the worker-level half: it creates the holders, feeds partition ends to
them, processes what may go (committing on the commit interval, like the loop), and pauses the
partitions whose held records are at the limit so memory stays bounded while the other topic
catches up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamflow.runtime.aligned_input import AlignedInput, extracted_time
from streamflow.runtime.commit_cycle import CommitCycle
from streamflow.runtime.task import Task
from streamflow.runtime.task_table import TaskTable

DRAIN_CHUNK = 512
"""Records of an aligned task processed between two checks of the cycle's age."""
ALIGN_MAX_WAIT = float(os.environ.get("STREAMFLOW_ALIGN_MAX_WAIT", "60"))
"""How long a task reading several topics holds its records for one whose partition is behind
and sends nothing (seconds): past that, a broker is likely gone and the rest goes on."""


class AlignedDriver:
    """The aligned tasks of one set of clients (made anew when a recovery replaces them)."""

    def __init__(
        self,
        table: TaskTable,
        topology: Any,
        consumer: Consumer,
        cycle: CommitCycle[Task],
        commit: Callable[[], object],
    ) -> None:
        self._table = table
        self._topology = topology
        self._consumer = consumer
        self._cycle = cycle
        self._commit = commit
        self._paused: dict[str, set[str]] = {}
        """Per aligned task, the source topics paused because their held records are full."""

    def align(self, task: Task) -> None:
        """Give a task reading several topics its holder; its offsets stop at what it holds."""
        topics = [t.name for t in task.sub.sources]
        time_of = {
            t.name: extracted_time(t, extract)
            for t in task.sub.sources
            if (extract := self._topology.source_node(t.name).timestamp) is not None
        }
        aligned = task.aligned = AlignedInput(topics, task.partition, ALIGN_MAX_WAIT, time_of)
        for topic in topics:
            task.hold_offsets(topic, aligned.committable(topic))

    def forget(self, task_id: str) -> None:
        self._paused.pop(task_id, None)

    def reached_end(self, msg: Any) -> bool:
        """Partition-EOF: a task reading several topics need not wait for this one. (One that
        starts learns it afresh: librdkafka emits the EOF again after a resume or a seek.)"""
        task = self._table.at(msg.topic(), msg.partition())
        if task is None or task.aligned is None:
            return False
        task.aligned.reached_end(msg.topic())
        return True

    @property
    def waiting(self) -> bool:
        """Some task holds records, or has paused a topic: worth a drain when input is idle."""
        return any(
            t.aligned is not None and (t.aligned.held or self._paused.get(t.id))
            for t in self._table.tasks.values()
        )

    def drain(self) -> int:
        """Process what the aligned tasks may process now; returns how many records."""
        done = 0
        table, cycle = self._table, self._cycle
        for task in list(table.tasks.values()):
            aligned = task.aligned
            if aligned is None or not table.is_running(task):
                continue
            if not aligned.held:
                if self._paused.get(task.id):
                    self._hold_back(task, aligned)
                continue
            while ready := aligned.take(DRAIN_CHUNK):
                cycle.begin()
                for msg in ready:
                    task.process(msg)
                done += len(ready)
                # Every record taken is processed: the offsets may be committed here, so a long
                # drain commits on the commit interval like the loop (results become visible
                # steadily, and no transaction outgrows a batch's).
                if cycle.age >= cycle.commit_interval:
                    self._commit()
                if task.aligned is not aligned or not table.is_running(task):
                    break  # the commit aborted and rewound, or the task went away
            self._hold_back(task, aligned)
        return done

    def _hold_back(self, task: Task, aligned: AlignedInput) -> None:
        """Pause the partitions whose held records reached the limit; resume them once they
        are down to half."""
        paused = self._paused.get(task.id, set())
        pause = aligned.to_pause(paused)
        if pause == paused:
            return
        for topic in pause - paused:
            self._consumer.pause([TopicPartition(topic, task.partition)])
        for topic in paused - pause:
            self._consumer.resume([TopicPartition(topic, task.partition)])
        self._paused[task.id] = pause
