"""Restore: bring a task's stores up to the end of their changelogs before the task processes.

Runs in the worker's main loop a slice at a time (never inside a rebalance callback, so a long
restore cannot blow ``max.poll.interval.ms``). Reads with ``read_committed`` from each store's
checkpoint; "caught up" is the consumer reaching the end of the partition (librdkafka's
partition-EOF, which under read_committed is the last stable offset) — not comparing offsets
with ``high watermark - 1``, because transaction markers occupy offsets too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import WriteBatch

from streamflow.kafka.refusals import AUTHORIZATION_CODES
from streamflow.runtime.log_format import ProgressLine

log = logging.getLogger(__name__)

STALE_AFTER_MS = 20 * 3600 * 1000
"""A checkpoint older than this is not trusted: changelogs keep tombstones 24 h (specs.py)."""


@dataclass
class _Progress:
    task: Any
    store: Any
    start: int
    end: int
    restored: int = 0
    last_offset: int = -1
    done: bool = False
    batch: WriteBatch | None = None
    """This slice's records, written in one go with the checkpoint (``_flush``)."""
    pending: int = 0
    """Records in ``batch``."""
    position: int = -1
    """The offset restored up to (the last checkpoint written): past transaction markers
    once an EOF was seen, unlike ``last_offset + 1``."""


class Restorer:
    """One restore consumer per worker, outside the consumer group."""

    def __init__(
        self,
        bootstrap: str,
        app_name: str,
        settings: Mapping[str, str] | None = None,
        batch_size: int = 10_000,
    ) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                **(settings or {}),  # security and the like; never what the restore relies on
                "group.id": f"{app_name}-restore",  # required by librdkafka; never joins or commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                # A caught-up changelog is the common case: learn its end without the default
                # half-second broker-side wait per fetch.
                "fetch.wait.max.ms": 10,
                # Keep fetching while the queue holds less than this per partition: at the
                # default (100,000) the fetcher stopped and backed off while Python drained the
                # queue. Measured on 1M changelog records, 6 partitions: 329k -> 694k records/s
                # consumed. The queue's bytes stay bounded by queued.max.messages.kbytes.
                "queued.min.messages": 1_000_000,
                "queued.max.messages.kbytes": 256 * 1024,
                "fetch.queue.backoff.ms": 10,
            }
        )
        self._batch_size = batch_size
        self._active: dict[tuple[str, int], _Progress] = {}
        self._tasks: dict[str, tuple[Any, list[_Progress]]] = {}
        self._last_report = 0.0
        self.restored_total = 0
        """Changelog records restored by this worker since it started (metrics)."""
        self._bar = ProgressLine("restoring")
        self._last_bar = 0.0

    def add(self, task: Any) -> None:
        """Start restoring every store of ``task``."""
        # The only network calls first: when the cluster cannot answer (KafkaException), nothing
        # has changed yet and the worker asks again on a later loop turn.
        ends = [
            self._consumer.get_watermark_offsets(
                TopicPartition(spec.changelog, task.partition), timeout=10, cached=False
            )
            for spec in task.sub.stores
        ]
        progresses = []
        for spec, (low, high) in zip(task.sub.stores, ends, strict=True):
            store = task.store(spec.name)
            checkpoint = store.checkpoint()
            age = store.checkpoint_age_ms()
            if checkpoint is None and store.has_data():
                # Data with no checkpoint: written by no commit we know of. Replaying over it
                # cannot remove keys it holds that the changelog does not.
                log.warning(
                    "store %s of task %s holds data but no changelog checkpoint; "
                    "wiping it and rebuilding from %s",
                    spec.name,
                    task.id,
                    spec.changelog,
                )
                store.wipe()
            elif checkpoint is not None and checkpoint > high:
                # The changelog is shorter than what this replica has seen: the topic was
                # recreated or truncated. The replica holds state the changelog does not.
                log.warning(
                    "store %s of task %s: checkpoint %d is past the end of %s[%d] (%d); "
                    "the topic was recreated or truncated: wiping the store and "
                    "rebuilding from the changelog",
                    spec.name,
                    task.id,
                    checkpoint,
                    spec.changelog,
                    task.partition,
                    high,
                )
                store.wipe()
                checkpoint = None
            elif checkpoint is not None and (checkpoint < low or (age or 0) > STALE_AFTER_MS):
                # Records between the checkpoint and now may be gone (retention) or their
                # tombstones compacted away (delete.retention.ms): replaying from the checkpoint
                # could resurrect deleted keys. Rebuild this replica from the whole changelog.
                log.info(
                    "store %s of task %s: checkpoint %d is stale (log starts at %d, written "
                    "%.1f h ago); rebuilding from the changelog",
                    spec.name,
                    task.id,
                    checkpoint,
                    low,
                    (age or 0) / 3.6e6,
                )
                store.wipe()
                checkpoint = None
            start = OFFSET_BEGINNING if checkpoint is None else checkpoint
            progress = _Progress(task, store, 0 if checkpoint is None else checkpoint, high)
            progresses.append(progress)
            self._active[(spec.changelog, task.partition)] = progress
            self._consumer.incremental_assign(
                [TopicPartition(spec.changelog, task.partition, start)]
            )
            if high - progress.start > 10_000:
                log.info(
                    "restoring store %s of task %s from changelog offset %d (up to %d records)",
                    spec.name,
                    task.id,
                    progress.start,
                    high - progress.start,
                )
        self._tasks[task.id] = (task, progresses)

    def remove(self, task: Any) -> None:
        """Stop restoring ``task`` (it was revoked mid-restore): what is applied stays applied."""
        self._tasks.pop(task.id, None)
        self._release(task)

    def _release(self, task: Any) -> None:
        mine = [tp for tp, p in self._active.items() if p.task is task]
        for tp in mine:
            del self._active[tp]
        if mine:
            self._consumer.incremental_unassign([TopicPartition(t, p) for t, p in mine])

    def progress(self, task_id: str) -> tuple[int, int] | None:
        """Records restored so far and the estimate of all (offsets), or None: not restoring."""
        entry = self._tasks.get(task_id)
        if entry is None:
            return None
        progresses = entry[1]
        return sum(p.restored for p in progresses), sum(p.end - p.start for p in progresses)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def step(self, timeout: float = 0.05) -> list[Any]:
        """Restore one slice; returns the tasks that are now caught up.

        The hot loop of a restore: a million records must cost a second, not several. So
        records go from the consumer's messages straight into each partition's ``WriteBatch``
        (raw bytes, no tuple, no list), a partition's progress is looked up once per run of
        its messages (fetches come grouped by partition), and offsets are read once per run.
        """
        if not self._active:
            return self._finished()
        # Any: records of assigned changelogs, whose topic, partition and offset are never None
        # (confluent-kafka's stubs allow None for error events, handled below).
        messages: list[Any] = self._consumer.consume(self._batch_size, timeout)
        active = self._active
        touched: list[_Progress] = []
        progress: _Progress | None = None
        topic: str | None = None
        partition = -1
        last: Any = None
        count = 0
        put: Any = None
        for msg in messages:
            if msg.partition() != partition or msg.topic() != topic:
                if progress is not None and count:
                    progress.pending += count
                    progress.last_offset = last.offset()
                count = 0
                topic, partition = msg.topic(), msg.partition()
                progress = active.get((topic, partition))
                if progress is not None:
                    if progress.batch is None:
                        progress.batch = WriteBatch(raw_mode=True)
                        touched.append(progress)
                    put = progress.batch.put  # bound once per run, not looked up per record
            if progress is None:
                continue  # released meanwhile (its task was revoked)
            err = msg.error()
            if err is not None:
                if count:  # the records of this run are in the batch: account for them first
                    progress.pending += count
                    progress.last_offset = last.offset()
                self._error(progress, msg, err)
                count = 0
                topic = None  # look the partition up again: its batch was just written
                continue
            value = msg.value()
            if value is None:
                assert progress.batch is not None
                progress.batch.delete(msg.key())  # a tombstone
            else:
                put(msg.key(), value)
            last = msg
            count += 1
        if progress is not None and count:
            progress.pending += count
            progress.last_offset = last.offset()
        for touched_progress in touched:
            if touched_progress.batch is not None:
                self._flush(touched_progress, touched_progress.last_offset + 1)
        self._report()
        return self._finished()

    def _error(self, progress: _Progress, msg: Any, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            self._flush(progress, msg.offset())
            progress.done = True
        elif err.code() in AUTHORIZATION_CODES:
            raise KafkaException(err)  # a missing ACL: the worker says which and stops
        else:
            log.warning("restore of %s[%d]: %s", msg.topic(), msg.partition(), err)

    def _flush(self, progress: _Progress, next_offset: int) -> None:
        # One WriteBatch per slice: the records and the new checkpoint land atomically, so a
        # crash mid-restore resumes from here instead of from the start.
        if progress.pending or next_offset > progress.start:
            batch = progress.batch or WriteBatch(raw_mode=True)
            progress.store.restore_write(batch, next_offset)
            progress.position = next_offset
            progress.restored += progress.pending
            self.restored_total += progress.pending
        progress.batch = None
        progress.pending = 0

    def _finished(self) -> list[Any]:
        done = []
        for task_id, (task, progresses) in list(self._tasks.items()):
            if all(p.done for p in progresses):
                del self._tasks[task_id]
                self._release(task)
                restored = sum(p.restored for p in progresses)
                if restored:
                    log.info("task %s restored %d changelog records", task_id, restored)
                done.append(task)
        return done

    def _report(self) -> None:
        now = time.monotonic()
        if self._bar.enabled and now - self._last_bar >= 0.2:
            self._last_bar = now
            big = [p for p in self._active.values() if p.end - p.start > 10_000]
            if big and not all(p.done for p in big):
                self._bar.show(sum(p.restored for p in big), sum(p.end - p.start for p in big))
            elif big:
                self._bar.done()
        if now - self._last_report < 2.0:
            return
        self._last_report = now
        for (topic, partition), p in self._active.items():
            if not p.done and p.end - p.start > 10_000:
                log.info(
                    "restoring %s[%d]: %d / ~%d records",
                    topic,
                    partition,
                    p.restored,
                    p.end - p.start,
                )

    def close(self) -> None:
        self._consumer.close()
