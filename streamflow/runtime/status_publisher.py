"""Copies the worker's figures for its HTTP endpoint (``/status``, ``/metrics``).

The endpoint answers on its own threads, which must never touch the consumer or a task. So the
worker's thread publishes an immutable snapshot about once a second, and whenever someone asks
(answered between batches, so it is current): per task its state, counts, rate, positions and
restore progress; for the worker the restore rate, standby lag and long-running attempts.
"""

from __future__ import annotations

import socket
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamflow.operate.metrics import Metrics, Snapshot, TaskFigures
from streamflow.runtime.restore import Restorer
from streamflow.runtime.standby import StandbyReplicas
from streamflow.runtime.step_executor import StepExecutor
from streamflow.runtime.task_table import TaskTable

PUBLISH_INTERVAL = 1.0
"""Seconds between two copies of the tasks' figures for the HTTP endpoint (metrics, status)."""


class StatusPublisher:
    """Rates are measured over at least ``PUBLISH_INTERVAL / 2``: frequent asking does not
    make them noise."""

    def __init__(self, metrics: Metrics, app: str, executor: StepExecutor) -> None:
        self._metrics = metrics
        self._app = app
        self._executor = executor
        self.next_at = 0.0
        self._published: tuple[float, dict[str, int], int] = (time.monotonic(), {}, 0)

    def publish(
        self,
        worker_id: str,
        table: TaskTable,
        consumer: Consumer,
        restorer: Restorer | None,
        restored: int,
        standbys: StandbyReplicas | None,
    ) -> None:
        """``restored``: records every restorer of this worker restored, replaced ones too."""
        now = time.monotonic()
        self.next_at = now + PUBLISH_INTERVAL
        then, processed_then, restored_then = self._published
        elapsed = now - then
        measure = elapsed >= PUBLISH_INTERVAL / 2
        metrics = self._metrics
        old_rates = {t.task: t.records_per_second for t in metrics.snapshot.tasks}
        figures = []
        processed: dict[str, int] = {}
        for task_id, task in sorted(table.tasks.items()):
            running = table.is_running(task)
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
                    partitions=positions(consumer, table.partitions(task)) if running else [],
                    restore_done=progress[0] if progress else 0,
                    restore_total=progress[1] if progress else 0,
                )
            )
        metrics.restored_records = restored
        try:
            member_id = consumer.memberid() or ""
        except (KafkaException, RuntimeError):
            member_id = ""
        restore_rate = metrics.snapshot.restore_records_per_second
        if measure:
            restore_rate = round((restored - restored_then) / elapsed, 1)
        metrics.snapshot = Snapshot(
            app=self._app,
            worker_id=worker_id,
            member_id=member_id,
            tasks=figures,
            restore_records_per_second=restore_rate,
            standby_lag=standbys.lag() if standbys is not None else {},
            long_attempts=self._executor.long_running(),
            published_at=time.time(),
        )
        if measure:
            self._published = (now, processed, restored)


def positions(
    consumer: Consumer, parts: list[TopicPartition]
) -> list[tuple[str, int, int | None, int | None]]:
    """Each partition's position and high watermark, both known locally (the high one as of
    the last fetch): no request to the cluster."""
    out: list[tuple[str, int, int | None, int | None]] = []
    try:
        found = consumer.position(parts)
    except KafkaException:
        return out
    for tp in found:
        position = tp.offset if tp.offset >= 0 else None
        try:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            high = None
        out.append((tp.topic, tp.partition, position, high if high is None or high >= 0 else None))
    return out


def advertised(host: str, port: int) -> str:
    """The endpoint's address as other hosts reach it (a wildcard bind names this host)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"{host}:{port}"
