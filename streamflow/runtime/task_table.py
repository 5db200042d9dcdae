"""The tasks a worker owns and where each fetched record goes.

A task is created when all its partitions are assigned, restores its stores, and only then
*runs*: its partitions are routed to it. Until then (and after its revocation) the route of its
partitions is empty and their records are fetched again later. The table is the one place that
knows which of a worker's tasks run, so the loop, the commit, the status page and the HTTP
queries ask it rather than keeping views of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Consumer, TopicPartition

from streamflow.runtime.task import Task
from streamflow.topology.specs import SubTopology


class TaskTable:
    """Tasks by id, and topic → partition → the running task."""

    def __init__(self, subs: Sequence[SubTopology]) -> None:
        self.sub_of_topic = {t.name: sub for sub in subs for t in sub.sources}
        self.tasks: dict[str, Task] = {}
        self.route: dict[str, list[Task | None]] = {}
        self.initializing: list[Task] = []
        """Created tasks whose committed offsets are not known yet (``Assignments``)."""

    def size_routes(self, sub_partitions: dict[int, int]) -> None:
        """One route slot per partition of every source topic (the plan knows the counts)."""
        for topic, sub in self.sub_of_topic.items():
            self.route[topic] = [None] * sub_partitions[sub.id]

    @property
    def topics(self) -> list[str]:
        return list(self.route)

    def task_id(self, tp: TopicPartition) -> str | None:
        sub = self.sub_of_topic.get(tp.topic)
        return None if sub is None else f"{sub.id}_{tp.partition}"

    @staticmethod
    def partitions(task: Task) -> list[TopicPartition]:
        return [TopicPartition(t.name, task.partition) for t in task.sub.sources]

    def is_running(self, task: Task) -> bool:
        return self.route[task.sub.sources[0].name][task.partition] is task

    def any_running(self) -> bool:
        return any(t is not None for parts in self.route.values() for t in parts)

    def running(self) -> list[Task]:
        """The tasks processing records now (restored): what a query may read. ``list()``
        copies in one C call: the HTTP threads ask while the worker thread changes the table."""
        return [t for t in list(self.tasks.values()) if self.is_running(t)]

    def at(self, topic: str, partition: int) -> Task | None:
        return self.route[topic][partition]

    def start(self, task: Task) -> None:
        for tp in self.partitions(task):
            self.route[tp.topic][tp.partition] = task

    def pop(self, tp: TopicPartition) -> Task | None:
        """Take the task of ``tp`` out of the table (revoked or lost); None if there is none."""
        task_id = self.task_id(tp)
        task = None if task_id is None else self.tasks.pop(task_id, None)
        if task is None:
            return None
        for source in task.sub.sources:
            self.route[source.name][task.partition] = None
        if task in self.initializing:
            self.initializing.remove(task)
        return task

    def clear(self) -> list[Task]:
        """Forget every task (a recovery closes them dirty); returns them."""
        tasks = list(self.tasks.values())
        self.tasks.clear()
        self.initializing.clear()
        for parts in self.route.values():
            parts[:] = [None] * len(parts)
        return tasks

    def stage(self, consumer: Consumer, stop_at: dict[tuple[str, int], int] | None) -> list[Task]:
        """Stage each running task's input offsets; return the tasks with something to commit.

        Offsets come from the consumer's position (one call per cycle, not one dict write per
        record): every record returned by the consumer was processed before a commit, so the
        position of each partition is exactly the next offset to commit (``stop_at``: the first
        unprocessed offsets of a mid-batch commit). Every running partition's offset goes into
        every transaction, unchanged ones included: the offsets carry the group generation, so
        a worker evicted from the group (a long pause, a cut network) is fenced even when its
        cycle only fired timers.
        """
        tps = [tp for t in self.tasks.values() if self.is_running(t) for tp in self.partitions(t)]
        if tps:
            for tp in consumer.position(tps):
                task = self.route[tp.topic][tp.partition]
                if task is None:
                    continue
                position = tp.offset
                if stop_at is not None:
                    position = min(position, stop_at.get((tp.topic, tp.partition), position))
                # Negative: nothing fetched since assignment (the committed offset stays); a
                # step task commits only up to its lowest unfinished command.
                task.offsets.stage(tp.topic, position)
        return [t for t in self.tasks.values() if t.offsets.has_staged or t.stores]
