"""Moves finished step attempts into commit cycles.

Attempts run on the step executor's threads (``step_executor``); what they produce (a reply, an
entity write, a done mark) must be written on the worker's thread inside an open transaction.
The pump does that at three moments: whenever the loop sees completions, just before a commit
(giving attempts started in this cycle a millisecond, so a quick step replies in the cycle that
started it), and when the worker stops (a grace period for running attempts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streamflow.runtime.commit_cycle import CommitCycle
from streamflow.runtime.step_executor import StepExecutor
from streamflow.runtime.task import Task

log = logging.getLogger(__name__)

QUICK_STEP_WAIT = 0.001
"""Seconds a commit waits for attempts its cycle started (see ``before_commit``)."""


class StepPump:
    """Completions of one executor into the cycles of one set of clients."""

    def __init__(
        self,
        executor: StepExecutor,
        cycle: CommitCycle[Task],
        commit: Callable[[], object],
        max_cycle_seconds: float,
        submitted_at_commit: int = 0,
    ) -> None:
        self._executor = executor
        self._cycle = cycle
        self._commit = commit
        self._max_cycle_seconds = max_cycle_seconds
        self.submitted_at_commit = submitted_at_commit
        """The executor's submission count at the last commit: did this cycle start any?"""

    def complete(self) -> None:
        """Apply finished attempts (replies, entity writes, done marks) in the open cycle."""
        if self._executor.has_completions():
            self._cycle.begin()
            self._executor.run_completions()

    def before_commit(self) -> None:
        """Give attempts this cycle started up to QUICK_STEP_WAIT to finish, so a step that
        takes a millisecond replies in the cycle that started it rather than one commit later
        (a step that waits on I/O just finishes in a later cycle)."""
        executor = self._executor
        if executor.submitted != self.submitted_at_commit and executor.in_flight:
            deadline = time.monotonic() + QUICK_STEP_WAIT
            while executor.in_flight > executor.overrunning:
                left = deadline - time.monotonic()
                if left <= 0 or not executor.wait(left):
                    break
                self.complete()
        elif executor.has_completions():
            self.complete()
        self.submitted_at_commit = executor.submitted

    def drain(self, grace: float) -> None:
        """Stopping: give running attempts ``grace`` seconds to finish and commit them; the
        rest run again on the partitions' next owner (same idempotency key and attempt)."""
        executor = self._executor
        if not executor.in_flight:
            return
        # Attempts that have not started never will: their commands run on the next owner.
        executor.forget_waiting()
        log.info("waiting up to %.0f s for %d running step attempt(s)", grace, executor.in_flight)
        deadline = time.monotonic() + grace
        while executor.in_flight > executor.overrunning and time.monotonic() < deadline:
            executor.wait(0.05)
            executor.tick()
            self.complete()
            if self._cycle.open and self._cycle.age > self._max_cycle_seconds:
                self._commit()  # a drain is no reason to outlive the transaction timeout
        if executor.in_flight:
            log.warning(
                "leaving with %d step attempt(s) still running; they run again on the "
                "next owner of their partitions",
                executor.in_flight,
            )
