"""The worker: one consumer-group member that owns some tasks and runs their commit cycles.

The loop is written for the batch: take what the consumer has fetched (never waiting while a
cycle is open), process it, and commit when the batch did not fill up (we are keeping up with
the input), when ``commit_interval`` has passed or when ``commit_every`` records are in the
cycle. So a saturated worker commits every ~100 ms with large transactions, and a lightly
loaded one commits after every batch — a workflow hop waits for no timer.

This module keeps the loop (run, process, commit, recover, shut down) and the rebalance
callbacks, which must settle the open cycle before tasks change hands. The rest has one object
per job: ``worker_clients`` (topics first, then the clients, replaced together on a fatal
error), ``task_table`` (which task runs where), ``assignments`` (a task's life from assignment
to close), ``aligned_driver`` (tasks that read several topics), ``step_pump`` (finished step
attempts into cycles), ``status_publisher`` (the endpoint's figures) and ``commit_cycle``.

Size: over 450 lines because the loop, its commits, the recovery and the shutdown all decide
what happens to the *open cycle* (commit it, abort it, never touch it again), and that
decision must be read in one place.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamflow.cluster.access import AdminConnection
from streamflow.cluster.identity import WorkerIdentity
from streamflow.errors import ConfigError, KafkaUnavailable
from streamflow.kafka.refusals import principal_of
from streamflow.operate.http_endpoint import HTTP_CLIENT_ID_MARK, HttpEndpoint, WorkerCalls
from streamflow.operate.metrics import Metrics
from streamflow.operate.state_query import WorkerQueries, store_specs
from streamflow.runtime.aligned_driver import AlignedDriver
from streamflow.runtime.assignments import Assignments
from streamflow.runtime.commit_cycle import CommitCycle
from streamflow.runtime.config import AppConfig
from streamflow.runtime.stall_watch import StallWatch
from streamflow.runtime.standby import StandbyReplicas
from streamflow.runtime.status_publisher import StatusPublisher, advertised
from streamflow.runtime.step_executor import StepExecutor
from streamflow.runtime.step_pump import StepPump
from streamflow.runtime.task import Task
from streamflow.runtime.task_table import TaskTable
from streamflow.runtime.worker_clients import (
    Clients,
    check_librdkafka,
    consumer_error,
    raise_if_denied,
    setup_topics,
    start_clients,
)

log = logging.getLogger(__name__)

PUNCTUATION_INTERVAL = 0.05
"""Seconds between wall-clock punctuations: the resolution of durable timers."""
MAX_RECOVERIES = 5
RECOVERY_WINDOW = 600.0
"""More than MAX_RECOVERIES fatal client errors within RECOVERY_WINDOW seconds end the worker."""
STEP_POLL_INTERVAL = 0.002
"""Longest idle poll while step attempts run: a finished attempt's completion cannot wake a
blocked consumer poll, so the loop looks for completions at least this often."""
STANDBY_REFRESH = 5.0
"""Seconds between two looks at the group's assignment to choose this worker's standbys (and
right after every rebalance)."""


class Worker:
    """Runs an App's topology as one member of the consumer group ``config.name``."""

    def __init__(self, topology: Any, config: AppConfig, dead_letter_topic: str) -> None:
        self.topology = topology
        self.config = config
        self.dead_letter_topic = dead_letter_topic
        self.table = TaskTable(topology.sub_topologies())
        self._running = False
        self._stop_requested = False
        """stop() was called (it may come before the loop starts: then the loop never runs)."""
        self.processed = 0
        self._recoveries: list[float] = []
        self._dirty = False
        """Leaving on an error, or recovering: revocation must not commit."""
        self._next_punctuation = 0.0
        self._principal = principal_of(config.kafka.values)
        """Who the cluster sees: named by every authorization error."""
        self.executor = StepExecutor(config.step_threads, config.async_step_concurrency)
        self.max_cycle_seconds = min(
            config.transaction_timeout_ms / 3000, max(1.0, 10 * config.commit_interval)
        )
        """A cycle commits at the latest after this long, even in the middle of a batch."""
        self.metrics = Metrics()
        self.executor.metrics = self.metrics
        self.calls = WorkerCalls()
        """Queries from the HTTP thread, answered on this thread between batches."""
        self.endpoint: HttpEndpoint | None = None
        self.publisher = StatusPublisher(self.metrics, config.name, self.executor)
        self._stall_watch = StallWatch()
        self._restored_before = 0
        """Records restored by the restorers that recoveries replaced."""
        self._next_standby_refresh = 0.0
        self.clients: Clients | None = None

    @property
    def cycle(self) -> CommitCycle[Task]:
        assert self.clients is not None
        return self.clients.cycle

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self, install_signal_handlers: bool = True) -> None:
        cfg = self.config
        check_librdkafka()
        identity = WorkerIdentity(cfg.state_dir / cfg.name)
        clean = False
        self.worker_id = identity.worker_id
        try:
            if cfg.http_port is not None:
                self._serve_http()
            connection = AdminConnection(cfg.kafka, cfg.bootstrap)
            self._admin = connection.admin
            self.config, plan = setup_topics(
                connection,
                self.topology,
                cfg,
                self.dead_letter_topic,
                self._principal,
                lambda: self._stop_requested,
            )
            self.table.size_routes(plan.sub_partitions)
            self._start_clients()
            if install_signal_handlers:
                signal.signal(signal.SIGTERM, self._stop_signal)
                signal.signal(signal.SIGINT, self._stop_signal)
            # The hot loop allocates per record; objects that survive a cycle are few, so the
            # cyclic GC's generational scans are pure overhead (measured 2-3x on batch loops).
            gc.freeze()
            gc.set_threshold(100_000, 50, 100)
            self._running = not self._stop_requested
            log.info("worker %s of app %s started (%s)", self.worker_id, cfg.name, cfg.guarantee)
            while True:
                try:
                    self._loop()
                    break
                except (KafkaException, KafkaUnavailable) as exc:
                    if isinstance(exc, KafkaException):
                        raise_if_denied(exc, "WRITE or READ", "topic", None, self._principal)
                    if not self._may_recover(exc):
                        raise
                    self._recover(exc)
            clean = True
        finally:
            self._stall_watch.close()
            self._shutdown(clean)
            identity.release()
            if self.endpoint is not None:
                self.endpoint.close()

    def _serve_http(self) -> None:
        cfg = self.config
        assert cfg.http_port is not None
        try:
            self.endpoint = HttpEndpoint(self.metrics, cfg.http_host, cfg.http_port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve HTTP on {cfg.http_host}:{cfg.http_port} ({exc.strerror}): "
                "choose another --http-port, or 0 for any free one"
            ) from exc
        queries = WorkerQueries(
            store_specs(self.topology), self.table.running, self.calls.call, lambda: self.worker_id
        )
        self.endpoint.routes["/state/"] = queries.route
        workflows = self.topology.workflows  # its instances' routes: workflow layer
        if workflows is not None:
            self.endpoint.routes.update(workflows.query_routes(queries))
        self.endpoint.refresh = lambda: self.calls.call(self._publish, 2.0)
        self.endpoint.start()

    def _start_clients(self) -> None:
        """New clients, and the objects that work with them: made anew on every recovery."""
        cfg = self.config
        client_id = None
        if self.endpoint is not None:
            address = advertised(self.endpoint.host, self.endpoint.port)
            client_id = f"{cfg.name}-{self.worker_id}{HTTP_CLIENT_ID_MARK}{address}"
        old = self.clients
        if old is not None:
            self._restored_before += old.restorer.restored_total
        clients = self.clients = start_clients(
            cfg,
            self.topology,
            self.worker_id,
            self.dead_letter_topic,
            self.metrics,
            self._principal,
            client_id,
        )
        self._next_standby_refresh = 0.0
        self.aligned = AlignedDriver(
            self.table, self.topology, clients.consumer, clients.cycle, self._commit
        )
        self.assignments = Assignments(
            self.table,
            clients,
            self.aligned,
            self.topology,
            cfg,
            self.dead_letter_topic,
            self.executor,
            self._standbys_changed,
        )
        self.steps = StepPump(
            self.executor,
            clients.cycle,
            self._commit,
            self.max_cycle_seconds,
            submitted_at_commit=self.executor.submitted,
        )
        clients.consumer.subscribe(
            self.table.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # -- recovery from fatal client errors ----------------------------------------------------

    def _may_recover(self, exc: BaseException) -> bool:
        """A fenced or broken producer, an expired transaction or a fatal consumer error is
        survivable (Kafka Streams closes the tasks dirty and rejoins); a burst of them is not."""
        if not self._running:
            return False
        now = time.monotonic()
        self._recoveries = [t for t in self._recoveries if now - t < RECOVERY_WINDOW] + [now]
        if len(self._recoveries) > MAX_RECOVERIES:
            log.error(
                "%d fatal client errors in %.0f s; giving up",
                len(self._recoveries),
                RECOVERY_WINDOW,
            )
            return False
        return True

    def _recover(self, exc: BaseException) -> None:
        """Close every task dirty (buffers dropped; RocksDB holds committed state only, so the
        stores reopen from their checkpoints), throw the clients away and start new ones: new
        producers fence the old transactional ids, a new consumer rejoins the group."""
        reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        log.warning("fatal client error (%s): closing tasks dirty and rejoining the group", reason)
        assert self.clients is not None
        self.clients.cycle.open = False  # the transaction is lost with its producer
        self._dirty = True
        for task in self.table.clear():
            try:
                task.aborted()
            finally:
                task.close()
        self.clients.discard()
        self._dirty = False
        self._start_clients()

    def stop(self) -> None:
        """Ask the loop to finish its cycle, commit and leave the group (asked while starting:
        the worker leaves as soon as it can, before processing anything)."""
        self._stop_requested = True
        self._running = False

    def _stop_signal(self, signum: int, _frame: Any) -> None:
        log.info("signal %d: draining and leaving the group", signum)
        self._stop_requested = True
        self._running = False

    def _shutdown(self, clean: bool) -> None:
        """Leave the group. After a clean stop (SIGTERM) the open cycle commits; after anything
        else it aborts: records it did not finish must not have their offsets committed."""
        clients = self.clients
        self._dirty = not clean
        try:
            if clients is not None:
                if clean:
                    self.steps.drain(self.config.shutdown_grace)
                    if clients.cycle.open:
                        clients.cycle.commit(self._running_tasks())
                elif clients.cycle.open:
                    try:
                        clients.cycle.abort(
                            self._running_tasks(), "the worker is stopping on an error"
                        )
                    except Exception:  # noqa: BLE001 - fenced or broken: the coordinator aborts it
                        log.warning(
                            "could not abort the open transaction; the coordinator "
                            "aborts it when it times out"
                        )
        except Exception:
            log.exception("error while finishing the last cycle")
        try:
            if clients is not None:
                clients.consumer.close()  # leaves the group: revoke callback closes the tasks
        except Exception:
            log.exception("error while leaving the group")
        for task in self.table.clear():
            task.close()
        if clients is not None:
            clients.restorer.close()
            if clients.standbys is not None:
                clients.standbys.close()
        self.executor.close()
        if clients is not None:
            clients.close_producers()
        cycle = clients.cycle if clients is not None else None
        if cycle is not None and cycle.commits:
            log.info(
                "worker stopped after %d records, %d commits (mean %.1f ms), %d aborts",
                self.processed,
                cycle.commits,
                1000 * cycle.commit_seconds / cycle.commits,
                cycle.aborts,
            )
        else:
            log.info("worker stopped after %d records", self.processed)

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self.clients is not None
        cfg = self.config
        clients = self.clients
        consumer, cycle, executor = clients.consumer, clients.cycle, self.executor
        restorer, standbys = clients.restorer, clients.standbys
        assignments, aligned, steps = self.assignments, self.aligned, self.steps
        batch = cfg.batch_size
        stall_watch = self._stall_watch
        while self._running:
            stall_watch.turn()
            if self.calls.pending:
                self.calls.run_pending()
            now = time.monotonic()
            if self.endpoint is not None and now >= self.publisher.next_at:
                self._publish()
            if assignments.due(now):
                assignments.initialize()
            if restorer.busy:
                for task in restorer.step(0.01 if self.table.any_running() else 0.05):
                    assignments.start(task)
            if standbys is not None:
                if time.monotonic() >= self._next_standby_refresh and not cycle.open:
                    self._refresh_standbys(standbys)  # network calls: never in an open cycle
                if standbys.busy:
                    standbys.step(0)
            if time.monotonic() >= self._next_punctuation:
                self._punctuate()
            if executor.in_flight:
                executor.tick()
                if executor.has_completions():
                    steps.complete()
            messages = consumer.consume(batch, 0)
            if not messages:
                if aligned.waiting and aligned.drain():
                    continue  # what a lagging topic was waited for: go on without it
                if cycle.open:
                    steps.before_commit()
                    self._commit()  # input drained: commit now, latency over batching
                ready = assignments.due(time.monotonic())
                wait = 0.0 if restorer.busy or ready else self._idle_wait()
                if executor.in_flight:
                    # A completion cannot wake the consumer's poll, but it wakes this wait.
                    # Both stay short: a longer wait here delays records (measured: backing
                    # off to 10 ms took 1000/s latency p50 from ~150 ms to ~290 ms).
                    if executor.wait(STEP_POLL_INTERVAL / 2):
                        continue
                    wait = min(wait, STEP_POLL_INTERVAL / 2)
                first = consumer.poll(wait)  # wakes on the first record, unlike consume()
                if first is None:
                    continue
                messages = consumer.consume(batch - 1, 0)
                messages.insert(0, first)
            self._process(messages)
            if cycle.due(batch_filled=len(messages) >= batch):
                steps.before_commit()
                self._commit()

    def _refresh_standbys(self, standbys: StandbyReplicas) -> None:
        """Keep the standbys the ring assigns this worker (``standby.standby_tasks``)."""
        assert self.clients is not None
        self._next_standby_refresh = time.monotonic() + STANDBY_REFRESH
        try:
            mine = self.clients.consumer.memberid()
        except (KafkaException, RuntimeError):
            return
        if mine:  # else: not in the group yet
            standbys.refresh(
                self._admin, self.config.name, mine, self.config.num_standbys, self.table.tasks
            )

    def _standbys_changed(self) -> None:
        self._next_standby_refresh = 0.0

    def _publish(self) -> None:
        """The endpoint's figures, copied on this thread (see ``status_publisher``)."""
        clients = self.clients
        if clients is None:
            return
        restored = self._restored_before + clients.restorer.restored_total
        self.publisher.publish(
            self.worker_id,
            self.table,
            clients.consumer,
            clients.restorer,
            restored,
            clients.standbys,
        )

    def _idle_wait(self) -> float:
        if any(t.punctuators for t in self.table.tasks.values()):
            return max(0.0, min(0.2, self._next_punctuation - time.monotonic()))
        return 0.2

    def _punctuate(self) -> None:
        """Fire due durable timers inside a commit cycle, so their effects commit atomically."""
        self._next_punctuation = time.monotonic() + PUNCTUATION_INTERVAL
        now_ms = int(time.time() * 1000)
        due = {
            id(t): t
            for parts in self.table.route.values()
            for t in parts
            if t is not None and t.punctuators and t.due(now_ms)
        }
        if not due:
            return
        self.cycle.begin()
        for task in due.values():
            try:
                task.punctuate(now_ms)
            except Exception as exc:  # a failing timer must not stop the worker or its peers
                log.exception("punctuation of task %s failed: %s", task.id, exc)
        self._commit()

    def _process(self, messages: list[Any]) -> None:
        """Process a batch in the open cycle. A cycle is bounded in time even mid-batch: past
        ``max_cycle_seconds`` it commits what is processed and goes on in a new one, so slow
        processing never lets the coordinator time the transaction out."""
        if messages[-1].error() is not None and all(m.error() is not None for m in messages):
            self._errors_only(messages)  # no transaction for a batch of EOFs and errors
            return
        cycle = self.cycle
        cycle.begin()
        route = self.table.route
        deadline = cycle.opened_at + self.max_cycle_seconds
        done = 0
        aligned = False
        for i, msg in enumerate(messages):
            if not i & 31 and i and time.monotonic() > deadline:
                cycle.count(i - done)
                self.processed += i - done
                done = i
                if not self._commit_before(messages[i:]):
                    return  # aborted: the input was rewound, the rest comes again
                cycle.begin()
                deadline = cycle.opened_at + self.max_cycle_seconds
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    aligned = self.aligned.reached_end(msg) or aligned
                else:
                    self._consumer_error(msg)
                continue
            task = route[msg.topic()][msg.partition()]
            if task is None:
                continue  # revoked or not yet restored: its records are fetched again later
            if task.aligned is not None:
                task.aligned.add(msg)  # processed in timestamp order with its other topics
                aligned = True
                continue
            task.process(msg)
        cycle.count(len(messages) - done)
        self.processed += len(messages) - done
        if aligned:
            self.aligned.drain()

    def _errors_only(self, messages: list[Any]) -> None:
        aligned = False
        for msg in messages:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                aligned = self.aligned.reached_end(msg) or aligned
            else:
                self._consumer_error(msg)
        if aligned:
            self.aligned.drain()

    def _consumer_error(self, msg: Any) -> None:
        consumer_error(msg, self.config.name, self._principal)

    # -- commits -----------------------------------------------------------------------------------

    def _commit(self, stop_at: dict[tuple[str, int], int] | None = None) -> bool:
        """Commit the open cycle; False when it aborted (the input was rewound). Tasks the
        abort could not rewind start again (``Assignments.restart``)."""
        cycle = self.cycle
        committed = cycle.commit(self._running_tasks(stop_at))
        if cycle.unrewound:
            tasks, cycle.unrewound = cycle.unrewound, []
            self.assignments.restart(tasks)
        return committed

    def _commit_before(self, unprocessed: list[Any]) -> bool:
        """Commit mid-batch: each partition's offset stops at its first unprocessed record."""
        first: dict[tuple[str, int], int] = {}
        for msg in unprocessed:
            if msg.error() is None:
                first.setdefault((msg.topic(), msg.partition()), msg.offset())
        return self._commit(first)

    def _running_tasks(self, stop_at: dict[tuple[str, int], int] | None = None) -> list[Task]:
        """Tasks with something to commit, their input offsets staged (``TaskTable.stage``)."""
        assert self.clients is not None
        return self.table.stage(self.clients.consumer, stop_at)

    # -- rebalance callbacks: the open cycle is settled before tasks change hands ------------------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assignments.assign(partitions)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Commit before giving tasks up, so their next owner starts exactly where we stopped;
        # attempts that finished meanwhile go with it rather than running again there.
        if not self._dirty:  # stopping on an error or recovering: commit nothing
            self.steps.complete()
            if self.cycle.open:
                self.cycle.commit(self._running_tasks())
        self.assignments.close(partitions)

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # We are no longer the owner: our open transaction must not commit.
        self.cycle.abort(self._running_tasks(), "partitions lost")
        self.assignments.close(partitions)
