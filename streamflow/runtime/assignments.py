"""A task's life on one worker: assigned, initialized, restored, running, closed.

On assignment a task is created paused (no record is processed against a stale store), learns
its committed offsets (which waits out a fenced zombie's pending ones), restores its stores, and
only then runs: its partitions are routed to it and resumed. Revoked or lost, it is closed and
its route emptied. The worker's rebalance callbacks call these after committing (revoke) or
aborting (lost) the open cycle; that part stays with the worker, which owns the cycle.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from streamflow.runtime.aligned_driver import AlignedDriver
from streamflow.runtime.config import AppConfig
from streamflow.runtime.step_executor import StepExecutor
from streamflow.runtime.task import Task
from streamflow.runtime.task_table import TaskTable
from streamflow.runtime.worker_clients import Clients

log = logging.getLogger(__name__)

INITIALIZE_RETRY_SECONDS = 0.5
"""After a failed try, the next one waits a little: no busy loop while a broker is away."""


class Assignments:
    """Task lifecycle for one set of clients (made anew when a recovery replaces them)."""

    def __init__(
        self,
        table: TaskTable,
        clients: Clients,
        aligned: AlignedDriver,
        topology: Any,
        config: AppConfig,
        dead_letter_topic: str,
        executor: StepExecutor,
        standbys_changed: Callable[[], None],
    ) -> None:
        self._table = table
        self._clients = clients
        self._aligned = aligned
        self._topology = topology
        self._config = config
        self._dead_letter_topic = dead_letter_topic
        self._executor = executor
        self._standbys_changed = standbys_changed
        self.initialize_after = 0.0

    @property
    def initializing(self) -> bool:
        return bool(self._table.initializing)

    def due(self, now: float) -> bool:
        """Tasks wait for their committed offsets, and the last try is long enough ago."""
        return bool(self._table.initializing) and now >= self.initialize_after

    def assign(self, partitions: list[TopicPartition], already_assigned: bool = False) -> None:
        """Create the tasks whose partitions are all here now, paused until restored."""
        consumer = self._clients.consumer
        if already_assigned:
            pass
        elif self._clients.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if not partitions:
            return
        consumer.pause(partitions)
        table = self._table
        created = []
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        arriving = {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            sub = table.sub_of_topic[tp.topic]
            task_id = f"{sub.id}_{tp.partition}"
            if task_id in table.tasks:
                continue
            whole = [(t.name, tp.partition) for t in sub.sources]
            if not all(part in assigned for part in whole):
                # The new protocol hands partitions over incrementally: a task reading several
                # topics starts once all of its partitions are here (a later callback).
                continue
            standbys = self._clients.standbys
            if standbys is not None:
                standbys.release(task_id)  # its stores are this task's now: close them
                self._standbys_changed()  # and see who keeps standbys now
            nodes = {t.name: self._topology.source_node(t.name) for t in sub.sources}
            collector = self._clients.collector
            task = Task(
                sub,
                nodes,
                tp.partition,
                self._config.state_dir / self._config.name,
                collector,
                self._dead_letter_topic,
                step_executor=self._executor,
                max_record_bytes=collector.max_record_bytes,
                max_payload_bytes=self._config.max_payload_bytes,
            )
            if len(whole) > 1 and not task.offsets.held:
                self._aligned.align(task)
            if any(part not in arriving for part in whole):
                # Some of its partitions stayed assigned without a task since an incremental
                # revocation took the others (parked): start them from the committed offsets.
                task.rewind_on_start = True
            task.pause_input = functools.partial(self._pause_source, task.partition)
            task.resume_input = functools.partial(self._resume_source, task.partition)
            table.tasks[task_id] = task
            table.initializing.append(task)
            created.append(task_id)
        if created:
            log.info("assigned tasks %s", ", ".join(sorted(created)))

    def initialize(self) -> None:
        """Learn committed positions (waits out a zombie's pending offsets), then restore."""
        table, consumer = self._table, self._clients.consumer
        tasks, table.initializing = table.initializing, []
        tps = [tp for task in tasks for tp in table.partitions(task)]
        try:
            committed = consumer.committed(tps, timeout=30)
        except KafkaException as exc:
            log.info("committed offsets not yet stable (%s); retrying", exc.args[0].str())
            table.initializing = tasks + table.initializing
            self.initialize_after = time.monotonic() + INITIALIZE_RETRY_SECONDS
            return
        by_tp = {(tp.topic, tp.partition): tp.offset for tp in committed}
        for task in tasks:
            if task.id not in table.tasks:
                continue  # revoked while waiting
            for tp in table.partitions(task):
                task.offsets.start_at(tp.topic, by_tp.get((tp.topic, tp.partition), -1))
            if not task.sub.stores:
                self.start(task)
                continue
            try:
                self._clients.restorer.add(task)
            except KafkaException as exc:
                if exc.args[0].fatal():
                    raise
                # The changelog's end is unknown for now (a broker moving, a network cut): a
                # reason to ask again, not to throw every client away.
                log.info(
                    "changelog end of task %s not available (%s); retrying",
                    task.id,
                    exc.args[0].str(),
                )
                table.initializing.append(task)
                self.initialize_after = time.monotonic() + INITIALIZE_RETRY_SECONDS

    def start(self, task: Task) -> None:
        """Restored: route its partitions to it and fetch them."""
        consumer = self._clients.consumer
        parts = self._table.partitions(task)
        if task.rewind_on_start:
            for tp in parts:
                consumer.seek(
                    TopicPartition(tp.topic, tp.partition, task.offsets.committed(tp.topic))
                )
        self._table.start(task)
        consumer.resume(parts)
        log.debug("task %s running", task.id)

    def close(self, partitions: list[TopicPartition]) -> None:
        """Close the tasks of revoked or lost partitions (their cycle is settled already)."""
        closed = []
        for tp in partitions:
            task = self._table.pop(tp)
            if task is None:
                continue
            self._clients.restorer.remove(task)
            self._aligned.forget(task.id)
            task.close()
            closed.append(task.id)
            self._park_rest_of(task, partitions)
        if closed:
            log.info("revoked tasks %s", ", ".join(sorted(closed)))

    def restart(self, tasks: list[Task]) -> None:
        """Tasks an abort could not rewind start again: closed, then recreated paused, their
        committed offsets learnt and their stores restored, as on assignment."""
        table = self._table
        partitions = [
            tp
            for task in {t.id: t for t in tasks}.values()
            if table.tasks.get(task.id) is task
            for tp in table.partitions(task)
        ]
        if not partitions:
            return
        self.close(partitions)
        consumer = self._clients.consumer
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        still_ours = [tp for tp in partitions if (tp.topic, tp.partition) in assigned]
        if still_ours:
            self.assign(still_ours, already_assigned=True)
            for task in table.initializing:
                task.rewind_on_start = True  # the consumer is not at the committed offset

    def _park_rest_of(self, task: Task, revoked: list[TopicPartition]) -> None:
        """An incremental revocation took only some of a multi-topic task's partitions: pause
        the rest, which stay assigned but have no task, so nothing is fetched and skipped for
        them. A task made for them again seeks to the committed offsets (``assign``)."""
        gone = {(tp.topic, tp.partition) for tp in revoked}
        rest = [tp for tp in self._table.partitions(task) if (tp.topic, tp.partition) not in gone]
        if not rest:
            return
        consumer = self._clients.consumer
        try:
            assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            still = [tp for tp in rest if (tp.topic, tp.partition) in assigned]
            if still:
                consumer.pause(still)
        except KafkaException as exc:
            log.info("could not pause the rest of task %s: %s", task.id, exc.args[0].str())

    def _pause_source(self, partition: int, topic: str) -> None:
        """A step task's lane is full: stop fetching this one partition (not the task's other
        topics, whose steps have lanes of their own)."""
        self._clients.consumer.pause([TopicPartition(topic, partition)])

    def _resume_source(self, partition: int, topic: str) -> None:
        if self._table.at(topic, partition) is not None:  # still running here (not restoring)
            self._clients.consumer.resume([TopicPartition(topic, partition)])
