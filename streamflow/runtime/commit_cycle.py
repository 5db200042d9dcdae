"""The commit cycle: how a batch of processed records becomes durable, once.

Exactly-once (KIP-447): outputs, changelog records and input offsets go into one Kafka
transaction; stores apply their write buffers only after ``commit_transaction()`` returned; an
abort drops the buffers and rewinds the consumer to the last committed positions, so the same
records are processed again from the same state.

At-least-once: outputs and changelogs are flushed, then offsets are committed; a crash in
between replays records (duplicates, never loss).

Why two transactional producers, used in turn: after ``commit_transaction()`` returns, the
coordinator still writes the commit markers. A next transaction on the same producer that adds a
partition meanwhile gets ``CONCURRENT_TRANSACTIONS``, and librdkafka retries that after a fixed
20 ms (measured on a nearly idle worker: workflow hops at p90 ~55 ms with one producer, ~20 ms
with two). Cycles stay
strictly sequential (one transaction open at a time, the next begins only after the previous
committed), so ordering and abort semantics are those of a single producer; only the
transactional id alternates, giving each coordinator entry a whole cycle to complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamflow.kafka.refusals import AUTHORIZATION_CODES
from streamflow.operate.metrics import Metrics
from streamflow.runtime.bounded_calls import GRACE_SECONDS, BoundedCalls
from streamflow.runtime.collector import KafkaCollector
from streamflow.runtime.input_offsets import InputOffsets

log = logging.getLogger(__name__)


class CycleTask(Protocol):
    """What the cycle needs of a task (``runtime.task.Task``)."""

    @property
    def partition(self) -> int: ...

    @property
    def offsets(self) -> InputOffsets: ...

    def prepare_commit(self) -> None: ...

    def committed(self) -> None: ...

    def aborted(self) -> None: ...


TaskT = TypeVar("TaskT", bound=CycleTask)


class CommitCycle(Generic[TaskT]):
    """One Kafka transaction (or, at-least-once, one flush-then-commit) at a time."""

    def __init__(
        self,
        exactly_once: bool,
        timeout: float = 30.0,
        commit_interval: float = 0.1,
        commit_every: int = 20_000,
    ) -> None:
        self._producers: list[Producer] = []
        self._producer: Producer = cast(Producer, None)  # set by attach, before any cycle
        self._turn = 0
        self._consumer: Consumer = cast(Consumer, None)
        self._collector: KafkaCollector = cast(KafkaCollector, None)
        self._eos = exactly_once
        self._timeout = timeout
        self._calls = BoundedCalls("txn")
        """Transaction calls with a deadline librdkafka cannot miss (see bounded_calls)."""
        self.open = False
        self.unrewound: list[TaskT] = []
        """Tasks an abort could not rewind; the worker restarts them (see _abort)."""
        self.opened_at = 0.0
        self.records = 0
        self.delivery_error: KafkaError | None = None
        self.commits = 0
        self.aborts = 0
        self.commit_seconds = 0.0
        """Wall time spent committing (flush + offsets + EndTxn): the price of each cycle."""
        self.typical_commit_seconds = 0.0
        """Moving average of one commit's duration; the worker never commits more often."""
        self.metrics: Metrics | None = None
        """Where commits (with their duration) and aborts are counted, if anywhere."""
        self.commit_interval = commit_interval
        self.commit_every = commit_every

    # -- when to commit --------------------------------------------------------------------------

    def count(self, records: int) -> None:
        """``records`` more input records were processed in the open cycle."""
        self.records += records

    @property
    def age(self) -> float:
        """Seconds since the open cycle began."""
        return time.monotonic() - self.opened_at

    def due(self, batch_filled: bool) -> bool:
        """Whether the open cycle should commit after a batch. Smart batching: a batch that
        did not fill up means the input is kept up with, so commit, but not more often than
        a commit itself takes, or commits would eat the worker. Under load batches fill and
        the cycle commits every ``commit_interval`` or ``commit_every`` records."""
        age = self.age
        return (
            (not batch_filled and age >= self.typical_commit_seconds)
            or self.records >= self.commit_every
            or age >= self.commit_interval
        )

    def close(self) -> None:
        """Stop the helper thread of the transaction calls (its producers are being dropped)."""
        self._calls.close()

    def attach(
        self, producers: list[Producer], consumer: Consumer, collector: KafkaCollector
    ) -> None:
        """Bind the clients; the cycle exists first because an at-least-once producer is
        created with the cycle's delivery callback. Each cycle takes the next producer in
        turn and points the collector at it."""
        self._producers, self._consumer, self._collector = producers, consumer, collector
        self._producer = producers[0]
        collector.use(self._producer)

    def begin(self) -> None:
        """Open a cycle before the first record of a batch is processed."""
        if self.open:
            return
        if len(self._producers) > 1:
            self._turn = (self._turn + 1) % len(self._producers)
            self._producer = self._producers[self._turn]
            self._collector.use(self._producer)
        if self._eos:
            self._producer.begin_transaction()
        self.open = True
        self.opened_at = time.monotonic()

    def on_delivery(self, err: KafkaError | None, _msg: Message | None) -> None:
        """At-least-once: remember a failed delivery so the cycle rewinds instead of committing."""
        if err is not None:
            self.delivery_error = err

    def commit(self, tasks: Sequence[TaskT]) -> bool:
        """Commit the open cycle for ``tasks``; False when it had to abort (input rewound)."""
        if not self.open:
            return True
        started = time.perf_counter()
        for task in tasks:
            task.prepare_commit()
        offsets = [
            TopicPartition(topic, task.partition, offset)
            for task in tasks
            for topic, offset in task.offsets.staged()
        ]
        try:
            if self._eos:
                if offsets:
                    self._send_offsets(offsets)
                self._commit_transaction()
                self._producer.poll(0)  # serve changelog delivery reports → store checkpoints
            else:
                # At-least-once: offsets only after every output and changelog record is
                # acknowledged; a failed or timed-out delivery rewinds instead.
                left = self._producer.flush(self._timeout)
                if self.delivery_error is None and left:
                    self.delivery_error = KafkaError(
                        KafkaError._TIMED_OUT,
                        f"{left} records undelivered after {self._timeout:g} s",
                    )
                if self.delivery_error is not None:
                    raise KafkaException(self.delivery_error)
                if offsets:
                    self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            fatal = getattr(err, "fatal", lambda: False)()
            if self._eos and (fatal or not err.txn_requires_abort()):
                raise  # fenced or broken producer: the worker closes its tasks dirty and rejoins
            self._abort(tasks, f"commit failed: {err}")
            if err.code() in AUTHORIZATION_CODES:
                raise  # an ACL is missing: every retry would abort the same way
            return False
        # Apply the buffers only now: if we crash before this line the changelog already holds
        # these writes and restore replays them; RocksDB never sees aborted data.
        for task in tasks:
            task.committed()
            task.offsets.commit_staged()
        self.open = False
        self.records = 0
        self.commits += 1
        took = time.perf_counter() - started
        self.commit_seconds += took
        self.typical_commit_seconds += 0.2 * (took - self.typical_commit_seconds)
        if self.metrics is not None:
            self.metrics.committed(took)
        return True

    def _send_offsets(self, offsets: list[TopicPartition]) -> None:
        """Retriable errors (coordinator loading or moving, a request timeout) are retried
        with backoff until the cycle's timeout; anything else is the caller's."""
        deadline = time.monotonic() + self._timeout
        backoff = 0.05
        while True:
            try:
                self._calls.call(
                    self._producer.send_offsets_to_transaction,
                    offsets,
                    self._consumer.consumer_group_metadata(),
                    self._timeout,
                    limit=self._timeout + GRACE_SECONDS,
                    what="send_offsets_to_transaction",
                )
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or time.monotonic() + backoff > deadline:
                    raise
                log.info("send_offsets_to_transaction: %s; retrying in %.2f s", err.str(), backoff)
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)

    def _commit_transaction(self) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._calls.call(
                    self._producer.commit_transaction,
                    self._timeout,
                    limit=self._timeout + GRACE_SECONDS,
                    what="commit_transaction",
                )
                return
            except KafkaException as exc:
                if exc.args[0].retriable() and time.monotonic() < deadline:
                    continue  # librdkafka documents commit as safe to retry on retriable errors
                raise

    def abort(self, tasks: Sequence[TaskT], reason: str) -> None:
        if self.open:
            self._abort(tasks, reason)

    def _abort(self, tasks: Sequence[TaskT], reason: str) -> None:
        log.warning(
            "aborting commit cycle (%s): rewinding input to the last committed offsets", reason
        )
        if self._eos:
            self._calls.call(
                self._producer.abort_transaction,
                self._timeout,
                limit=self._timeout + GRACE_SECONDS,
                what="abort_transaction",
            )
        self.delivery_error = None
        for task in tasks:
            task.aborted()
            for topic, committed in task.offsets.drop_staged():
                try:
                    self._consumer.seek(TopicPartition(topic, task.partition, committed))
                except KafkaException as exc:
                    # Lost or revoked meanwhile, or the seek failed: a task that goes on from
                    # where the consumer is would skip what the aborted cycle processed. The
                    # worker closes it and starts it again from the committed offsets.
                    log.warning(
                        "no rewind of %s[%d] (%s): the task restarts from its committed offsets",
                        topic,
                        task.partition,
                        exc.args[0].str(),
                    )
                    self.unrewound.append(task)
        self.open = False
        self.records = 0
        self.aborts += 1
        if self.metrics is not None:
            self.metrics.aborted()
