"""Transactional producer calls with a deadline that holds even when librdkafka's does not.

librdkafka's ``send_offsets_to_transaction`` can block forever past its timeout when the group
coordinator it cached goes away: its coordinator request never times out and is only retried on
some other broker's state change (librdkafka issues 5456 and 5511, open in 2.16). The fault suite
hit it: a worker cut off from the cluster for 20 s sat in that call for 5 minutes, holding its
partitions, until ``max.poll.interval.ms`` expelled it. ``commit_transaction`` has a similar
history of retrying forever.

So the commit cycle makes these calls on a helper thread and waits for it with its own deadline.
A call that overruns is abandoned with its thread (daemon; a blocked C call cannot be
interrupted) and reported as a fatal error: the worker then closes its tasks dirty and starts new
producers, whose ``init_transactions`` fences the stuck one, so it can never commit late.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

T = TypeVar("T")

GRACE_SECONDS = 2.0
"""How long past its own timeout a call may take before we stop waiting for it."""


class _Job:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class BoundedCalls:
    """Runs calls one at a time on a helper thread; gives up on one after its deadline.

    One persistent thread, not a thread per call: the cycle makes two of these calls per
    commit, and a thread start costs more than the hand-off.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self.abandoned = 0
        """Calls given up on: each left a thread blocked in librdkafka."""

    def call(self, fn: Callable[..., T], *args: Any, limit: float, what: str) -> T:
        """``fn(*args)``, or a fatal ``KafkaException`` naming ``what`` after ``limit`` s."""
        jobs = self._jobs
        if jobs is None:
            jobs = self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(jobs,), daemon=True, name=f"streamflow-{self._name}"
            ).start()
        job = _Job(fn, args)
        jobs.put(job)
        if not job.done.wait(limit):
            self._jobs = None  # the thread is stuck in the call: the next call gets a new one
            self.abandoned += 1
            raise KafkaException(
                KafkaError(
                    KafkaError._TIMED_OUT,
                    f"{what} did not return within {limit:g} s (a librdkafka call that ignored its "
                    "timeout); the producer is abandoned and fenced by its replacement",
                    fatal=True,
                )
            )
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        try:
            job.result = job.fn(*job.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            job.error = exc
        finally:
            job.done.set()
