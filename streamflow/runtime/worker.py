"""The worker: one consumer-group member that owns some tasks and runs their commit cycles.

The loop is written for the batch: take what the consumer has fetched (never waiting while a
cycle is open), process it, and commit when the batch did not fill up (we are keeping up with
the input), when ``commit_interval`` has passed or when ``commit_every`` records are in the
cycle. So a saturated worker commits every ~100 ms with large transactions, and a lightly
loaded one commits after every batch — a workflow hop waits for no timer.

Size: the worker loop, the task lifecycle on rebalance and the recovery from fatal errors
share the consumer, the producers and the task table; the single-purpose pieces they use are
their own modules (commit_cycle, input_offsets, restore, step_executor, bounded_calls, topics).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
import signal
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamflow.cluster import access
from streamflow.cluster.access import AdminConnection
from streamflow.cluster.identity import WorkerIdentity
from streamflow.cluster.record_chunks import chunked_topics
from streamflow.cluster.topics import ensure_topics, existing_topics, plan_topics
from streamflow.errors import ConfigError, KafkaUnavailable
from streamflow.kafka.record_size import max_record_bytes
from streamflow.kafka.refusals import denied, principal_of
from streamflow.operate.http_endpoint import HTTP_CLIENT_ID_MARK, HttpEndpoint, WorkerCalls
from streamflow.operate.metrics import Metrics, Snapshot, TaskFigures
from streamflow.operate.state_query import WorkerQueries, store_specs
from streamflow.runtime import group_protocol
from streamflow.runtime.aligned_input import AlignedInput, extracted_time
from streamflow.runtime.collector import KafkaCollector
from streamflow.runtime.commit_cycle import CommitCycle
from streamflow.runtime.config import AppConfig, consumer_config, producer_config
from streamflow.runtime.restore import Restorer
from streamflow.runtime.stall_watch import StallWatch
from streamflow.runtime.standby import StandbyReplicas, standby_tasks
from streamflow.runtime.step_executor import StepExecutor
from streamflow.runtime.task import Task
from streamflow.serde.registry.binding import bind_schemas

log = logging.getLogger(__name__)

PUNCTUATION_INTERVAL = 0.05
"""Seconds between wall-clock punctuations: the resolution of durable timers."""
STARTUP_WAIT = float(os.environ.get("STREAMFLOW_STARTUP_WAIT", "60"))
"""Seconds a starting worker waits for an unreachable cluster before it fails."""
MAX_RECOVERIES = 5
RECOVERY_WINDOW = 600.0
"""More than MAX_RECOVERIES fatal client errors within RECOVERY_WINDOW seconds end the worker."""
QUICK_STEP_WAIT = 0.001
"""Seconds a commit waits for attempts its cycle started (see _finish_quick_steps)."""
INITIALIZE_RETRY_SECONDS = 0.5
STEP_POLL_INTERVAL = 0.002
"""Longest idle poll while step attempts run: a finished attempt's completion cannot wake a
blocked consumer poll, so the loop looks for completions at least this often."""
DRAIN_CHUNK = 512
"""Records of an aligned task processed between two checks of the cycle's age."""
ALIGN_MAX_WAIT = float(os.environ.get("STREAMFLOW_ALIGN_MAX_WAIT", "60"))
"""How long a task reading several topics holds its records for one whose partition is behind
and sends nothing (seconds): past that, a broker is likely gone and the rest goes on."""
STANDBY_REFRESH = 5.0
"""Seconds between two looks at the group's assignment to choose this worker's standbys (and
right after every rebalance)."""
PUBLISH_INTERVAL = 1.0
"""Seconds between two copies of the tasks' figures for the HTTP endpoint (metrics, status)."""


class Worker:
    """Runs an App's topology as one member of the consumer group ``config.name``."""

    def __init__(self, topology: Any, config: AppConfig, dead_letter_topic: str) -> None:
        self.topology = topology
        self.config = config
        self.dead_letter_topic = dead_letter_topic
        self.subs = topology.sub_topologies()
        self._sub_of_topic = {t.name: sub for sub in self.subs for t in sub.sources}
        self._running = False
        self._stop_requested = False
        """stop() was called (it may come before the loop starts: then the loop never runs)."""
        self._tasks: dict[str, Task] = {}  # every task this worker owns
        self._aligned_paused: dict[str, set[str]] = {}
        """Per aligned task, the source topics paused because their held records are full."""
        self._route: dict[str, list[Task | None]] = {}  # topic → partition → running task
        self._initializing: list[Task] = []
        self._initialize_after = 0.0
        """After a failed try, the next one waits a little: no busy loop while a broker is away."""
        self.processed = 0
        self._recoveries: list[float] = []
        self._submitted_at_commit = 0
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
        self._stall_watch = StallWatch()
        self._next_publish = 0.0
        self._published: tuple[float, dict[str, int], int] = (time.monotonic(), {}, 0)
        self._restored_before = 0
        """Records restored by the restorers that recoveries replaced."""
        self.standbys: StandbyReplicas | None = None
        self._next_standby_refresh = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self, install_signal_handlers: bool = True) -> None:
        cfg = self.config
        _check_librdkafka()
        identity = WorkerIdentity(cfg.state_dir / cfg.name)
        clean = False
        self.worker_id = identity.worker_id
        try:
            if cfg.http_port is not None:
                try:
                    self.endpoint = HttpEndpoint(self.metrics, cfg.http_host, cfg.http_port)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot serve HTTP on {cfg.http_host}:{cfg.http_port} ({exc.strerror}): "
                        "choose another --http-port, or 0 for any free one"
                    ) from exc
                queries = WorkerQueries(
                    store_specs(self.topology),
                    self._running_task_list,
                    self.calls.call,
                    lambda: self.worker_id,
                )
                self.endpoint.routes["/state/"] = queries.route
                workflows = self.topology.workflows  # its instances' routes: workflow layer
                if workflows is not None:
                    self.endpoint.routes.update(workflows.query_routes(queries))
                self.endpoint.refresh = lambda: self.calls.call(self._publish, 2.0)
                self.endpoint.start()
            connection = AdminConnection(cfg.kafka, cfg.bootstrap)
            self._admin = connection.admin
            self._setup_topics(connection)
            self._start_clients(identity.worker_id)
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
                        self._raise_if_denied(exc, "WRITE or READ", "topic", None)
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
        self.cycle.open = False  # the transaction is lost with its producer; never commit it
        self._dirty = True
        for task in list(self._tasks.values()):
            try:
                task.aborted()
            finally:
                task.close()
        self._tasks.clear()
        self._initializing.clear()
        for parts in self._route.values():
            parts[:] = [None] * len(parts)
        try:
            self.consumer.close()
        except Exception as close_exc:  # noqa: BLE001 - it is being replaced either way
            log.info("closing the old consumer: %s", close_exc)
        for producer in self.producers:
            try:
                producer.purge()
            except Exception:  # noqa: BLE001
                pass
        self.restorer.close()
        if self.standbys is not None:
            self.standbys.close()
            self.standbys = None
        self.cycle.close()
        self._dirty = False
        self._start_clients(self.worker_id)

    def stop(self) -> None:
        """Ask the loop to finish its cycle, commit and leave the group (asked while starting:
        the worker leaves as soon as it can, before processing anything)."""
        self._stop_requested = True
        self._running = False

    def _stop_signal(self, signum: int, _frame: Any) -> None:
        log.info("signal %d: draining and leaving the group", signum)
        self._stop_requested = True
        self._running = False

    def _raise_if_denied(
        self, exc: KafkaException, operation: str, resource: str, name: str | None
    ) -> None:
        """A missing ACL is not survivable: stop with the error that names it."""
        refusal = denied(exc.args[0], operation, resource, name, self._principal)
        if refusal is not None:
            raise refusal from None

    def _setup_topics(self, connection: AdminConnection) -> None:
        """Topics created, access checked (`access`), schemas bound: all before any client."""
        admin = connection.admin
        existing = self._wait_for_kafka(connection)
        registry = self.config.schema_registry
        access.check_app(
            admin, self.topology, existing, self._principal, before_plan=True, registry=registry
        )
        protocol = group_protocol.resolve(self.config.group_protocol, admin, self.config.name)
        self.config = dataclasses.replace(self.config, group_protocol=protocol)
        self.plan = plan_topics(self.topology, existing, self.dead_letter_topic)
        ensure_topics(admin, self.topology, self.plan, existing, principal=self._principal)
        access.check_app(
            admin, self.topology, self.plan.partitions, self._principal, registry=registry
        )
        # Before any client starts: an incompatible schema change refuses to start here.
        bind_schemas(self.topology, self.config)
        for sub in self.subs:
            for t in sub.sources:
                self._route[t.name] = [None] * self.plan.sub_partitions[sub.id]

    def _wait_for_kafka(self, admin: AdminConnection) -> dict[str, int]:
        """A worker restarted while its cluster restarts waits for it (a broker that is down
        for a minute is an outage, not a misconfiguration); after STARTUP_WAIT it gives up
        with the error that says what to check."""
        deadline = time.monotonic() + STARTUP_WAIT
        while True:
            try:
                return existing_topics(admin)
            except KafkaUnavailable as exc:
                if time.monotonic() > deadline or self._stop_requested:
                    raise
                log.warning("%s; retrying for up to %.0f s more", exc, deadline - time.monotonic())
                time.sleep(2)

    def _start_clients(self, worker_id: str) -> None:
        cfg = self.config
        eos = cfg.exactly_once
        # Waiting on a transaction call longer than the transaction may live is pointless: by
        # then the coordinator has aborted it.
        self.cycle: CommitCycle[Task] = CommitCycle(
            eos,
            timeout=cfg.transaction_timeout_ms / 1000,
            commit_interval=cfg.commit_interval,
            commit_every=cfg.commit_every,
        )
        self.cycle.metrics = self.metrics
        if eos:
            # Two transactional ids, used in turn by consecutive cycles (see commit_cycle).
            ids = [f"{cfg.name}-{worker_id}", f"{cfg.name}-{worker_id}-2"]
            self.producers = [Producer(producer_config(cfg, tid)) for tid in ids]
            for tid, producer in zip(ids, self.producers, strict=True):
                try:
                    # Fences a previous incarnation with the same transactional id and aborts
                    # its open transaction, so its half-done cycle can never commit.
                    producer.init_transactions(60)
                except KafkaException as exc:
                    self._raise_if_denied(exc, "WRITE", "transactional id", tid)
                    raise KafkaUnavailable(
                        f"cannot initialize transactions on {cfg.bootstrap}: {exc.args[0].str()}; "
                        "a single broker needs transaction.state.log.replication.factor=1 and "
                        "min.isr=1 (streamflow dev kafka start sets them)"
                    ) from exc
        else:
            pconf = producer_config(cfg, None)
            pconf["on_delivery"] = self.cycle.on_delivery
            self.producers = [Producer(pconf)]
        # Several source topics per sub-topology need partition p of each in the same task:
        # only the range assignor guarantees that; otherwise rebalance incrementally.
        multi_source = any(len(sub.sources) > 1 for sub in self.subs)
        # The new protocol (KIP-848) is incremental whatever the assignor.
        self._cooperative = not multi_source or cfg.group_protocol == "consumer"
        # Multi-topic tasks need partition p of each topic on one member: the range assignor
        # (client-side on the classic protocol, the broker's on the new one) guarantees it.
        strategy = "range" if multi_source else "cooperative-sticky"
        conf = consumer_config(cfg, strategy)
        if self.endpoint is not None:
            conf["client.id"] = f"{cfg.name}-{worker_id}{HTTP_CLIENT_ID_MARK}{self._advertised()}"
        self.consumer = Consumer(conf)
        self.collector = KafkaCollector(
            self.producers[0],
            max_record_bytes(producer_config(cfg, None)),
            chunked_topics(self.topology.topics) | {self.dead_letter_topic},
        )
        self.cycle.attach(self.producers, self.consumer, self.collector)
        replaced = getattr(self, "restorer", None)
        if replaced is not None:
            self._restored_before += replaced.restored_total
        self.restorer = Restorer(cfg.bootstrap, cfg.name, cfg.kafka.values)
        if cfg.num_standbys > 0 and any(sub.stores for sub in self.subs):
            self.standbys = StandbyReplicas(
                cfg.bootstrap, cfg.name, cfg.kafka.values, cfg.state_dir / cfg.name, self.subs
            )
            self._next_standby_refresh = 0.0
        self.consumer.subscribe(
            list(self._route),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _shutdown(self, clean: bool) -> None:
        """Leave the group. After a clean stop (SIGTERM) the open cycle commits; after anything
        else it aborts: records it did not finish must not have their offsets committed."""
        consumer = getattr(self, "consumer", None)
        self._dirty = not clean
        try:
            if consumer is not None:
                if clean:
                    self._drain_steps(self.config.shutdown_grace)
                    if self.cycle.open:
                        self.cycle.commit(self._running_tasks())
                elif self.cycle.open:
                    try:
                        self.cycle.abort(
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
            if consumer is not None:
                consumer.close()  # leaves the group: revoke callback closes the tasks
        except Exception:
            log.exception("error while leaving the group")
        for task in list(self._tasks.values()):
            task.close()
        self._tasks.clear()
        if getattr(self, "restorer", None) is not None:
            self.restorer.close()
        if self.standbys is not None:
            self.standbys.close()
        self.executor.close()
        for producer in getattr(self, "producers", []):
            try:
                producer.flush(10)
            except KafkaException as exc:
                # A producer in a fatal state (fenced, refused its transactional id) has nothing
                # to deliver; the error that stopped the worker is the one to report.
                log.info("producer not flushed: %s", exc.args[0].str())
        cycle = getattr(self, "cycle", None)
        if cycle is not None:
            cycle.close()
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
        cfg = self.config
        consumer, cycle, executor = self.consumer, self.cycle, self.executor
        batch = cfg.batch_size
        stall_watch = self._stall_watch
        while self._running:
            stall_watch.turn()
            if self.calls.pending:
                self.calls.run_pending()
            if self.endpoint is not None and time.monotonic() >= self._next_publish:
                self._publish()
            if self._initializing and time.monotonic() >= self._initialize_after:
                self._initialize_tasks()
            if self.restorer.busy:
                for task in self.restorer.step(0.01 if self._route_has_tasks() else 0.05):
                    self._start_processing(task)
            if self.standbys is not None:
                if time.monotonic() >= self._next_standby_refresh and not cycle.open:
                    self._refresh_standbys()  # network calls: never while a cycle is open
                if self.standbys.busy:
                    self.standbys.step(0)
            if time.monotonic() >= self._next_punctuation:
                self._punctuate()
            if executor.in_flight:
                executor.tick()
                if executor.has_completions():
                    self._complete_steps()
            messages = consumer.consume(batch, 0)
            if not messages:
                if self._aligning and self._drain_aligned():
                    continue  # what a lagging topic was waited for: go on without it
                if cycle.open:
                    self._finish_quick_steps()
                    self._commit()  # input drained: commit now, latency over batching
                ready = self._initializing and time.monotonic() >= self._initialize_after
                wait = 0.0 if self.restorer.busy or ready else self._idle_wait()
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
                self._finish_quick_steps()
                self._commit()

    # -- standby replicas ------------------------------------------------------------------------

    def _refresh_standbys(self) -> None:
        """Keep the standbys the ring assigns this worker (``standby.standby_tasks``)."""
        assert self.standbys is not None
        self._next_standby_refresh = time.monotonic() + STANDBY_REFRESH
        try:
            mine = self.consumer.memberid()
            if not mine:
                return  # not in the group yet
            group = self._admin.describe_consumer_groups([self.config.name])[self.config.name]
            described = group.result(2)
        except (KafkaException, RuntimeError, TimeoutError) as exc:
            log.debug("standbys not refreshed: %s", exc)
            return
        sub_of_topic = {t.name: sub.id for sub in self.subs for t in sub.sources}
        owners: dict[str, str] = {}
        for member in described.members:
            for tp in member.assignment.topic_partitions or []:
                sub_id = sub_of_topic.get(tp.topic)
                if sub_id is not None:
                    owners[f"{sub_id}_{tp.partition}"] = member.member_id
        members = [m.member_id for m in described.members]
        wanted = standby_tasks(mine, members, owners, self.config.num_standbys)
        wanted -= set(self._tasks)  # never a standby of a task this worker runs
        self.standbys.keep(wanted)

    # -- what the HTTP endpoint shows --------------------------------------------------------------

    def _running_task_list(self) -> list[Task]:
        """The tasks processing records now (restored): what a query may read."""
        # list() copies in one C call: the HTTP threads ask while the worker thread changes it.
        return [t for t in list(self._tasks.values()) if self._route_of(t)]

    def _advertised(self) -> str:
        """The endpoint's address as other hosts reach it (a wildcard bind names this host)."""
        assert self.endpoint is not None
        host = self.endpoint.host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        return f"{host}:{self.endpoint.port}"

    def _publish(self) -> None:
        """Copy the tasks' figures for the HTTP thread: about once a second, and whenever
        someone asks for ``/status`` (answered between batches, so it is current). Rates are
        measured over at least ``PUBLISH_INTERVAL / 2``: frequent asking does not make them
        noise."""
        now = time.monotonic()
        self._next_publish = now + PUBLISH_INTERVAL
        then, processed_then, restored_then = self._published
        elapsed = now - then
        measure = elapsed >= PUBLISH_INTERVAL / 2
        old_rates = {t.task: t.records_per_second for t in self.metrics.snapshot.tasks}
        restorer = getattr(self, "restorer", None)
        restored = self._restored_before + (restorer.restored_total if restorer else 0)
        figures = []
        processed: dict[str, int] = {}
        for task_id, task in sorted(self._tasks.items()):
            parts = self._task_partitions(task)
            running = self._route_of(task)
            progress = restorer.progress(task_id) if restorer is not None else None
            state = "running" if running else "restoring" if progress else "initializing"
            processed[task_id] = task.processed
            if measure:
                delta = task.processed - processed_then.get(task_id, task.processed)
                rate = round(delta / elapsed, 1)
            else:
                rate = old_rates.get(task_id, 0.0)
            figures.append(
                TaskFigures(
                    task=task_id,
                    state=state,
                    processed=task.processed,
                    records_per_second=rate,
                    dead_letters=task.dead_lettered,
                    partitions=self._positions(parts) if running else [],
                    restore_done=progress[0] if progress else 0,
                    restore_total=progress[1] if progress else 0,
                )
            )
        self.metrics.restored_records = restored
        try:
            member_id = self.consumer.memberid() or ""
        except (KafkaException, RuntimeError):
            member_id = ""
        restore_rate = self.metrics.snapshot.restore_records_per_second
        if measure:
            restore_rate = round((restored - restored_then) / elapsed, 1)
        self.metrics.snapshot = Snapshot(
            app=self.config.name,
            worker_id=self.worker_id,
            member_id=member_id,
            tasks=figures,
            restore_records_per_second=restore_rate,
            standby_lag=self.standbys.lag() if self.standbys is not None else {},
            long_attempts=self.executor.long_running(),
            published_at=time.time(),
        )
        if measure:
            self._published = (now, processed, restored)

    def _positions(
        self, parts: list[TopicPartition]
    ) -> list[tuple[str, int, int | None, int | None]]:
        """Each partition's position and high watermark, both known locally (the high one as
        of the last fetch): no request to the cluster."""
        out: list[tuple[str, int, int | None, int | None]] = []
        try:
            positions = self.consumer.position(parts)
        except KafkaException:
            return out
        for tp in positions:
            position = tp.offset if tp.offset >= 0 else None
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                high = None
            out.append(
                (tp.topic, tp.partition, position, high if high is None or high >= 0 else None)
            )
        return out

    def _idle_wait(self) -> float:
        if any(t.punctuators for t in self._tasks.values()):
            return max(0.0, min(0.2, self._next_punctuation - time.monotonic()))
        return 0.2

    def _punctuate(self) -> None:
        """Fire due durable timers inside a commit cycle, so their effects commit atomically."""
        self._next_punctuation = time.monotonic() + PUNCTUATION_INTERVAL
        now_ms = int(time.time() * 1000)
        due = {
            id(t): t
            for parts in self._route.values()
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

    def _complete_steps(self) -> None:
        """Apply finished step attempts (replies, entity writes, done marks) in the open cycle."""
        if self.executor.has_completions():
            self.cycle.begin()
            self.executor.run_completions()

    def _finish_quick_steps(self) -> None:
        """Before a commit, give attempts this cycle started up to QUICK_STEP_WAIT to finish,
        so a step that takes a millisecond replies in the cycle that started it rather than
        one commit later (a step that waits on I/O just finishes in a later cycle)."""
        executor = self.executor
        if executor.submitted != self._submitted_at_commit and executor.in_flight:
            deadline = time.monotonic() + QUICK_STEP_WAIT
            while executor.in_flight > executor.overrunning:
                left = deadline - time.monotonic()
                if left <= 0 or not executor.wait(left):
                    break
                self._complete_steps()
        elif executor.has_completions():
            self._complete_steps()
        self._submitted_at_commit = executor.submitted

    def _drain_steps(self, grace: float) -> None:
        """Stopping: give running attempts ``grace`` seconds to finish and commit them; the
        rest run again on the partitions' next owner (same idempotency key and attempt)."""
        executor = self.executor
        if not executor.in_flight:
            return
        # Attempts that have not started never will: their commands run on the next owner.
        executor.forget_waiting()
        log.info("waiting up to %.0f s for %d running step attempt(s)", grace, executor.in_flight)
        deadline = time.monotonic() + grace
        while executor.in_flight > executor.overrunning and time.monotonic() < deadline:
            executor.wait(0.05)
            executor.tick()
            self._complete_steps()
            if self.cycle.open and self.cycle.age > self.max_cycle_seconds:
                self._commit()  # a drain is no reason to outlive the transaction timeout
        if executor.in_flight:
            log.warning(
                "leaving with %d step attempt(s) still running; they run again on the "
                "next owner of their partitions",
                executor.in_flight,
            )

    def _process(self, messages: list[Any]) -> None:
        """Process a batch in the open cycle. A cycle is bounded in time even mid-batch: past
        ``max_cycle_seconds`` it commits what is processed and goes on in a new one, so slow
        processing never lets the coordinator time the transaction out."""
        if messages[-1].error() is not None and all(m.error() is not None for m in messages):
            self._errors_only(messages)  # no transaction for a batch of EOFs and errors
            return
        cycle = self.cycle
        cycle.begin()
        route = self._route
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
                    aligned = self._reached_end(msg) or aligned
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
            self._drain_aligned()

    def _commit_before(self, unprocessed: list[Any]) -> bool:
        """Commit mid-batch: each partition's offset stops at its first unprocessed record."""
        first: dict[tuple[str, int], int] = {}
        for msg in unprocessed:
            if msg.error() is None:
                first.setdefault((msg.topic(), msg.partition()), msg.offset())
        committed = self.cycle.commit(self._running_tasks(first))
        if self.cycle.unrewound:
            self._restart_unrewound()
        return committed

    def _consumer_error(self, msg: Any) -> None:
        err = msg.error()
        topic = msg.topic()
        on_topic = bool(topic) and err.code() != KafkaError.GROUP_AUTHORIZATION_FAILED
        refusal = denied(
            err,
            "READ",
            "topic" if on_topic else "group",
            topic if on_topic else self.config.name,
            self._principal,
        )
        if refusal is not None:
            raise refusal
        if err.fatal():
            raise KafkaUnavailable(f"consumer fatal error: {err.str()}")
        log.warning("consumer error on %s[%s]: %s", msg.topic(), msg.partition(), err.str())

    def _commit(self) -> None:
        self.cycle.commit(self._running_tasks())
        if self.cycle.unrewound:
            self._restart_unrewound()

    def _restart_unrewound(self) -> None:
        """Tasks an abort could not rewind start again: closed, then recreated paused, their
        committed offsets learnt and their stores restored, as on assignment."""
        tasks, self.cycle.unrewound = self.cycle.unrewound, []
        partitions = [
            tp
            for task in {t.id: t for t in tasks}.values()
            if self._tasks.get(task.id) is task
            for tp in self._task_partitions(task)
        ]
        if not partitions:
            return
        self._close_tasks(partitions)
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        still_ours = [tp for tp in partitions if (tp.topic, tp.partition) in assigned]
        if still_ours:
            self._on_assign(self.consumer, still_ours, already_assigned=True)
            for task in self._initializing:
                task.rewind_on_start = True  # the consumer is not at the committed offset

    def _running_tasks(self, stop_at: dict[tuple[str, int], int] | None = None) -> list[Task]:
        """Tasks with something to commit, their input offsets filled in.

        Offsets come from the consumer's position (one call per cycle, not one dict write per
        record): every record returned by the consumer was processed before a commit, so the
        position of each partition is exactly the next offset to commit (``stop_at``: the first
        unprocessed offsets of a mid-batch commit). Every running partition's offset goes into
        every transaction, unchanged ones included: the offsets carry the group generation, so
        a worker evicted from the group (a long pause, a cut network) is fenced even when its
        cycle only fired timers.
        """
        tps = [
            tp for t in self._tasks.values() if self._route_of(t) for tp in self._task_partitions(t)
        ]
        if tps:
            for tp in self.consumer.position(tps):
                task = self._route[tp.topic][tp.partition]
                if task is None:
                    continue
                position = tp.offset
                if stop_at is not None:
                    position = min(position, stop_at.get((tp.topic, tp.partition), position))
                # Negative: nothing fetched since assignment (the committed offset stays); a
                # step task commits only up to its lowest unfinished command.
                task.offsets.stage(tp.topic, position)
        return [t for t in self._tasks.values() if t.offsets.has_staged or t.stores]

    def _route_of(self, task: Task) -> bool:
        return self._route[task.sub.sources[0].name][task.partition] is task

    def _route_has_tasks(self) -> bool:
        return any(t is not None for parts in self._route.values() for t in parts)

    # -- task lifecycle --------------------------------------------------------------------------

    def _task_partitions(self, task: Task) -> list[TopicPartition]:
        return [TopicPartition(t.name, task.partition) for t in task.sub.sources]

    def _initialize_tasks(self) -> None:
        """Learn committed positions (waits out a zombie's pending offsets), then restore."""
        tasks, self._initializing = self._initializing, []
        tps = [tp for task in tasks for tp in self._task_partitions(task)]
        try:
            committed = self.consumer.committed(tps, timeout=30)
        except KafkaException as exc:
            log.info("committed offsets not yet stable (%s); retrying", exc.args[0].str())
            self._initializing = tasks + self._initializing
            self._initialize_after = time.monotonic() + INITIALIZE_RETRY_SECONDS
            return
        by_tp = {(tp.topic, tp.partition): tp.offset for tp in committed}
        for task in tasks:
            if task.id not in self._tasks:
                continue  # revoked while waiting
            for tp in self._task_partitions(task):
                offset = by_tp.get((tp.topic, tp.partition), -1)
                task.offsets.start_at(tp.topic, offset)
            if task.sub.stores:
                try:
                    self.restorer.add(task)
                except KafkaException as exc:
                    if exc.args[0].fatal():
                        raise
                    # The changelog's end is unknown for now (a broker moving, a network cut):
                    # a reason to ask again, not to throw every client away.
                    log.info(
                        "changelog end of task %s not available (%s); retrying",
                        task.id,
                        exc.args[0].str(),
                    )
                    self._initializing.append(task)
                    self._initialize_after = time.monotonic() + INITIALIZE_RETRY_SECONDS
            else:
                self._start_processing(task)

    def _start_processing(self, task: Task) -> None:
        if task.rewind_on_start:
            for tp in self._task_partitions(task):
                self.consumer.seek(
                    TopicPartition(tp.topic, tp.partition, task.offsets.committed(tp.topic))
                )
        for tp in self._task_partitions(task):
            self._route[tp.topic][tp.partition] = task
        self.consumer.resume(self._task_partitions(task))
        log.debug("task %s running", task.id)

    def _on_assign(
        self, consumer: Any, partitions: list[TopicPartition], already_assigned: bool = False
    ) -> None:
        if already_assigned:
            pass
        elif self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if not partitions:
            return
        # Paused until restored: no record of a task is processed against a stale store.
        consumer.pause(partitions)
        created = []
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        arriving = {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            sub = self._sub_of_topic[tp.topic]
            task_id = f"{sub.id}_{tp.partition}"
            if task_id in self._tasks:
                continue
            whole = [(t.name, tp.partition) for t in sub.sources]
            if not all(part in assigned for part in whole):
                # The new protocol hands partitions over incrementally: a task reading several
                # topics starts once all of its partitions are here (a later callback).
                continue
            if self.standbys is not None:
                self.standbys.release(task_id)  # its stores are this task's now: close them
                self._next_standby_refresh = 0.0  # and see who keeps standbys now
            nodes = {t.name: self.topology.source_node(t.name) for t in sub.sources}
            task = Task(
                sub,
                nodes,
                tp.partition,
                self.config.state_dir / self.config.name,
                self.collector,
                self.dead_letter_topic,
                step_executor=self.executor,
                max_record_bytes=self.collector.max_record_bytes,
                max_payload_bytes=self.config.max_payload_bytes,
            )
            parts = self._task_partitions(task)
            if len(parts) > 1 and not task.offsets.held:
                self._align(task)
            if any(part not in arriving for part in whole):
                # Some of its partitions stayed assigned without a task since an incremental
                # revocation took the others (parked): start them from the committed offsets.
                task.rewind_on_start = True
            task.pause_input = functools.partial(self._pause_source, task.partition)
            task.resume_input = functools.partial(self._resume_source, task.partition)
            self._tasks[task_id] = task
            self._initializing.append(task)
            created.append(task_id)
        if created:
            log.info("assigned tasks %s", ", ".join(sorted(created)))

    def _align(self, task: Task) -> None:
        """A task reading several topics processes their records in timestamp order."""
        topics = [t.name for t in task.sub.sources]
        time_of = {
            t.name: extracted_time(t, extract)
            for t in task.sub.sources
            if (extract := self.topology.source_node(t.name).timestamp) is not None
        }
        aligned = task.aligned = AlignedInput(topics, task.partition, ALIGN_MAX_WAIT, time_of)
        for topic in topics:
            task.hold_offsets(topic, aligned.committable(topic))

    def _errors_only(self, messages: list[Any]) -> None:
        aligned = False
        for msg in messages:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                aligned = self._reached_end(msg) or aligned
            else:
                self._consumer_error(msg)
        if aligned:
            self._drain_aligned()

    def _reached_end(self, msg: Any) -> bool:
        """Partition-EOF: a task reading several topics need not wait for this one. (One that
        starts learns it afresh: librdkafka emits the EOF again after a resume or a seek.)"""
        task = self._route[msg.topic()][msg.partition()]
        if task is None or task.aligned is None:
            return False
        task.aligned.reached_end(msg.topic())
        return True

    @property
    def _aligning(self) -> bool:
        return any(
            t.aligned is not None and (t.aligned.held or self._aligned_paused.get(t.id))
            for t in self._tasks.values()
        )

    def _drain_aligned(self) -> int:
        """Process what the tasks reading several topics may process now; returns how many."""
        done = 0
        for task in list(self._tasks.values()):
            aligned = task.aligned
            if aligned is None or not self._route_of(task):
                continue
            if not aligned.held:
                if self._aligned_paused.get(task.id):
                    self._hold_back(task, aligned)
                continue
            while ready := aligned.take(DRAIN_CHUNK):
                cycle = self.cycle
                cycle.begin()
                for msg in ready:
                    task.process(msg)
                done += len(ready)
                # Every record taken is processed: the offsets may be committed here, so a long
                # drain commits on the commit interval like the loop (results become visible
                # steadily, and no transaction outgrows a batch's).
                if cycle.age >= cycle.commit_interval:
                    self._commit()
                if task.aligned is not aligned or not self._route_of(task):
                    break  # the commit aborted and rewound, or the task went away
            self._hold_back(task, aligned)
        return done

    def _hold_back(self, task: Task, aligned: AlignedInput) -> None:
        """Pause the partitions whose held records reached the limit (memory stays bounded
        while the other side catches up); resume them once they are down to half."""
        paused = self._aligned_paused.get(task.id, set())
        pause = aligned.to_pause(paused)
        if pause == paused:
            return
        for topic in pause - paused:
            self.consumer.pause([TopicPartition(topic, task.partition)])
        for topic in paused - pause:
            self.consumer.resume([TopicPartition(topic, task.partition)])
        self._aligned_paused[task.id] = pause

    def _pause_source(self, partition: int, topic: str) -> None:
        """A step task's lane is full: stop fetching this one partition (not the task's other
        topics, whose steps have lanes of their own)."""
        self.consumer.pause([TopicPartition(topic, partition)])  # the consumer of now

    def _resume_source(self, partition: int, topic: str) -> None:
        if self._route[topic][partition] is not None:  # still running here (not restoring)
            self.consumer.resume([TopicPartition(topic, partition)])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Commit before giving tasks up, so their next owner starts exactly where we stopped;
        # attempts that finished meanwhile go with it rather than running again there.
        if self._dirty:
            self._close_tasks(partitions)  # stopping on an error or recovering: commit nothing
            return
        self._complete_steps()
        if self.cycle.open:
            self.cycle.commit(self._running_tasks())
        self._close_tasks(partitions)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # We are no longer the owner: our open transaction must not commit.
        self.cycle.abort(self._running_tasks(), "partitions lost")
        self._close_tasks(partitions)

    def _park_rest_of(self, task: Task, revoked: list[TopicPartition]) -> None:
        """An incremental revocation took only some of a multi-topic task's partitions: pause
        the rest, which stay assigned but have no task, so nothing is fetched and skipped for
        them. A task made for them again seeks to the committed offsets (``_on_assign``)."""
        gone = {(tp.topic, tp.partition) for tp in revoked}
        rest = [tp for tp in self._task_partitions(task) if (tp.topic, tp.partition) not in gone]
        if not rest:
            return
        try:
            assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            still = [tp for tp in rest if (tp.topic, tp.partition) in assigned]
            if still:
                self.consumer.pause(still)
        except KafkaException as exc:
            log.info("could not pause the rest of task %s: %s", task.id, exc.args[0].str())

    def _close_tasks(self, partitions: list[TopicPartition]) -> None:
        closed = []
        for tp in partitions:
            sub = self._sub_of_topic.get(tp.topic)
            if sub is None:
                continue
            task = self._tasks.pop(f"{sub.id}_{tp.partition}", None)
            if task is None:
                continue
            for source in task.sub.sources:
                self._route[source.name][task.partition] = None
            if task in self._initializing:
                self._initializing.remove(task)
            self.restorer.remove(task)
            self._aligned_paused.pop(task.id, None)
            task.close()
            closed.append(task.id)
            self._park_rest_of(task, partitions)
        if closed:
            log.info("revoked tasks %s", ", ".join(sorted(closed)))


OLDEST_LIBRDKAFKA = (2, 16, 0)
"""From 2.2 until its fix (librdkafka #4844, fixed by #5213 in 2025), librdkafka advanced the
consumer's position by 2 after a partition-EOF in batch consumption; the worker commits positions
and asks for EOFs, so a commit could skip a record. 2.16 is the oldest checked to be right
(tests/integration/test_partition_eof.py)."""


def _check_librdkafka() -> None:
    from confluent_kafka import libversion

    version = libversion()[0]
    parts = tuple(int(p) for p in version.split("-")[0].split(".")[:3])
    if parts < OLDEST_LIBRDKAFKA:
        raise ConfigError(
            f"librdkafka {version} is older than 2.16: versions since 2.2 that lack the fix "
            "for librdkafka #4844 misplace the consumer's position after a partition end, which "
            "could skip records; install confluent-kafka>=2.16 (it bundles librdkafka 2.16)"
        )
