"""The threads ``def`` steps run on: a bounded pool of daemon threads, started as work comes.

A step attempt may block for hours (a payment API that never answers); the executor hands this
pool closures that serve a lane's slot (``runtime/step_executor.py``), and nothing else about
steps is known here.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class StepThreads:
    """At most ``size`` daemon threads, started as work arrives, taking jobs from one queue.

    Not ``ThreadPoolExecutor``: its threads are joined when the interpreter exits, so a worker
    stopping while a 5-hour step runs would hang for those 5 hours. A stopping worker commits
    what finished and leaves; an abandoned attempt runs again on the partition's next owner.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle == 0 and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._serve,
                    daemon=True,
                    name=f"streamflow-step-{len(self._threads) + 1}",
                )
                self._threads.append(thread)
                thread.start()
            elif self._idle:
                self._idle -= 1
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()
            with self._lock:
                self._idle += 1

    def has_waiting_jobs(self) -> bool:
        return not self._jobs.empty()

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
