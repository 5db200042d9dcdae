"""A worker's metrics, rendered in the Prometheus text format (``/metrics``, docs/operating.md).

Two kinds of figures, kept apart so neither costs the hot loop:

- **Counters and histograms of events** (commits, step attempts, workflow transitions) are
  bumped where the event happens, on the worker thread, once per event: a commit or a step
  attempt is thousands of times rarer than a record.
- **Figures per task and partition** (records processed, lag, restore progress) already live
  in the tasks and clients. The worker copies them into a ``Snapshot`` about once a second
  (``Worker._publish``), so the HTTP thread never touches a task, a store or a Kafka client,
  none of which is thread-safe, and a scrape costs the worker nothing.

Counters count work done, not work committed: a cycle that aborts and runs again counts its
records twice. That is what Prometheus counters are for (rates, not ledgers); the exactly-once
figures are the topics' own.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the executor counts into Metrics: a runtime import would be circular
    from streamflow.runtime.step_executor import LongAttempt

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative buckets in seconds, as Prometheus wants them; observe() is a bisection."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds


@dataclass
class TaskFigures:
    """One task as the worker last saw it."""

    task: str
    state: str
    """``restoring``, ``running`` or ``initializing``."""
    processed: int
    records_per_second: float
    dead_letters: int
    partitions: list[tuple[str, int, int | None, int | None]] = field(default_factory=list)
    """(topic, partition, position, high watermark) of each input partition."""
    restore_done: int = 0
    restore_total: int = 0


@dataclass
class Snapshot:
    """What the worker publishes for the HTTP thread (replaced whole, never mutated)."""

    app: str = ""
    worker_id: str = ""
    member_id: str = ""
    tasks: list[TaskFigures] = field(default_factory=list)
    restore_records_per_second: float = 0.0
    standby_lag: dict[str, int] = field(default_factory=dict)
    """Task id → changelog records its standby replica here is behind."""
    long_attempts: list[LongAttempt] = field(default_factory=list)
    """Step attempts running past their timeout or for over a minute (``StepExecutor``)."""
    published_at: float = 0.0


class Metrics:
    """The figures of one worker process; one instance per ``Worker``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        """Held by writers of the dicts below and by ``render``: a scrape never sees a dict
        change size under it. Taken once per event, never per record."""
        self.transactions = 0
        self.aborts = 0
        self.commit_latency = Histogram(LATENCY_BUCKETS)
        self.restored_records = 0
        self.step_attempts: dict[tuple[str, str], int] = defaultdict(int)
        self.step_retries: dict[str, int] = defaultdict(int)
        self.step_latency: dict[str, Histogram] = {}
        self.workflow_transitions: dict[tuple[str, str], int] = defaultdict(int)
        self.workflow_events: dict[tuple[str, str], int] = defaultdict(int)
        self.snapshot = Snapshot()

    # -- events (worker thread) ------------------------------------------------------------------

    def committed(self, seconds: float) -> None:
        with self.lock:
            self.transactions += 1
            self.commit_latency.observe(seconds)

    def aborted(self) -> None:
        with self.lock:
            self.aborts += 1

    def step_attempt(self, step: str, outcome: str, seconds: float | None, attempt: int) -> None:
        """One attempt of ``step`` ended: ``ok``, ``failed``, ``timed_out`` or ``cancelled``."""
        with self.lock:
            self.step_attempts[step, outcome] += 1
            if attempt > 1:
                self.step_retries[step] += 1
            if seconds is not None:
                hist = self.step_latency.get(step)
                if hist is None:
                    hist = self.step_latency[step] = Histogram(STEP_BUCKETS)
                hist.observe(seconds)

    def workflow_transition(self, workflow: str, status: str) -> None:
        with self.lock:
            self.workflow_transitions[workflow, status] += 1

    def workflow_event(self, workflow: str, event: str, n: int = 1) -> None:
        """Something happened to a workflow's events: ``parked`` (a version this worker
        lacks), ``unparked``, ``signal_dropped`` (the instance had ended)."""
        with self.lock:
            self.workflow_events[workflow, event] += n

    # -- rendering (HTTP thread) -----------------------------------------------------------------

    def render(self) -> str:
        with self.lock:
            return "".join(self._lines())

    def _lines(self) -> Iterable[str]:
        snap = self.snapshot
        app: Labels = (("app", snap.app),)
        labels: Labels

        def head(name: str, kind: str, text: str) -> str:
            return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"

        yield head(
            "streamflow_records_processed_total", "counter", "Input records processed per task."
        )
        for t in snap.tasks:
            yield _sample(
                "streamflow_records_processed_total", (*app, ("task", t.task)), t.processed
            )
        yield head(
            "streamflow_records_per_second",
            "gauge",
            "Input records processed per second per task, over the last publishing interval.",
        )
        for t in snap.tasks:
            labels = (*app, ("task", t.task))
            yield _sample("streamflow_records_per_second", labels, t.records_per_second)
        yield head(
            "streamflow_dead_letters_total", "counter", "Records sent to the dead-letter topic."
        )
        for t in snap.tasks:
            yield _sample("streamflow_dead_letters_total", (*app, ("task", t.task)), t.dead_letters)
        yield head(
            "streamflow_task_running",
            "gauge",
            "1 when the task processes records, 0 while it restores or initializes.",
        )
        for t in snap.tasks:
            labels = (*app, ("task", t.task), ("state", t.state))
            yield _sample("streamflow_task_running", labels, int(t.state == "running"))
        yield head(
            "streamflow_consumer_lag_records",
            "gauge",
            "Records between the task's position and the partition's high watermark.",
        )
        for t in snap.tasks:
            for topic, partition, position, high in t.partitions:
                if position is None or high is None:
                    continue
                labels = (*app, ("topic", topic), ("partition", str(partition)))
                yield _sample("streamflow_consumer_lag_records", labels, max(0, high - position))
        yield head(
            "streamflow_restore_remaining_records",
            "gauge",
            "Changelog records a restoring task has still to replay (estimate: offsets).",
        )
        for t in snap.tasks:
            if t.state == "restoring":
                remaining = max(0, t.restore_total - t.restore_done)
                yield _sample(
                    "streamflow_restore_remaining_records", (*app, ("task", t.task)), remaining
                )
        yield head("streamflow_restored_records_total", "counter", "Changelog records restored.")
        yield _sample("streamflow_restored_records_total", app, self.restored_records)
        yield head(
            "streamflow_restore_records_per_second",
            "gauge",
            "Changelog records restored per second over the last publishing interval.",
        )
        yield _sample("streamflow_restore_records_per_second", app, snap.restore_records_per_second)
        yield head(
            "streamflow_standby_lag_records",
            "gauge",
            "Changelog records a standby replica kept here is behind its task's changelog.",
        )
        for task_id, lag in sorted(snap.standby_lag.items()):
            yield _sample("streamflow_standby_lag_records", (*app, ("task", task_id)), lag)
        yield head("streamflow_transactions_total", "counter", "Commit cycles committed.")
        yield _sample("streamflow_transactions_total", app, self.transactions)
        yield head("streamflow_transaction_aborts_total", "counter", "Commit cycles aborted.")
        yield _sample("streamflow_transaction_aborts_total", app, self.aborts)
        yield head(
            "streamflow_commit_latency_seconds", "histogram", "Time a commit cycle's commit took."
        )
        yield from _histogram("streamflow_commit_latency_seconds", app, self.commit_latency)
        yield head(
            "streamflow_step_attempts_total",
            "counter",
            "Step attempts ended, by outcome (ok, failed, timed_out).",
        )
        for (step, outcome), n in sorted(self.step_attempts.items()):
            labels = (*app, ("step", step), ("outcome", outcome))
            yield _sample("streamflow_step_attempts_total", labels, n)
        yield head(
            "streamflow_step_attempts_hung",
            "gauge",
            "Step attempts still running past their timeout or for over a minute.",
        )
        hung: dict[str, int] = defaultdict(int)
        for attempt in snap.long_attempts:
            hung[attempt.id.step] += 1
        for step, n in sorted(hung.items()):
            yield _sample("streamflow_step_attempts_hung", (*app, ("step", step)), n)
        yield head("streamflow_step_retries_total", "counter", "Step attempts after the first.")
        for step, n in sorted(self.step_retries.items()):
            yield _sample("streamflow_step_retries_total", (*app, ("step", step)), n)
        yield head("streamflow_step_latency_seconds", "histogram", "How long step attempts ran.")
        for step, hist in sorted(self.step_latency.items()):
            yield from _histogram("streamflow_step_latency_seconds", (*app, ("step", step)), hist)
        yield head(
            "streamflow_workflow_transitions_total",
            "counter",
            "Workflow instances entering a status (running, completed, failed, ...).",
        )
        for (workflow, status), n in sorted(self.workflow_transitions.items()):
            labels = (*app, ("workflow", workflow), ("status", status))
            yield _sample("streamflow_workflow_transitions_total", labels, n)
        yield head(
            "streamflow_workflow_events_total",
            "counter",
            "Workflow events parked for a version this worker lacks, run after parking, "
            "or dropped (signals to ended instances).",
        )
        for (workflow, event), n in sorted(self.workflow_events.items()):
            labels = (*app, ("workflow", workflow), ("event", event))
            yield _sample("streamflow_workflow_events_total", labels, n)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Labels, value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    number = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{name}{{{inner}}} {number}\n"


def _histogram(name: str, labels: Labels, hist: Histogram) -> Iterable[str]:
    running = 0
    for bound, n in zip(hist.bounds, hist.counts, strict=False):
        running += n
        yield _sample(f"{name}_bucket", (*labels, ("le", repr(bound))), running)
    yield _sample(f"{name}_bucket", (*labels, ("le", "+Inf")), hist.count)
    yield _sample(f"{name}_sum", labels, hist.total)
    yield _sample(f"{name}_count", labels, hist.count)
