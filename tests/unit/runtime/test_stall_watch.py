"""A loop that stops turning writes every thread's stack to stderr; one that turns does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import time
    from streamflow.runtime import stall_watch
    stall_watch.REARM_SECONDS = 0.05
    watch = stall_watch.StallWatch(after=0.3)

    def stuck_in_a_call():
        time.sleep(1.2)

    for _ in range(20):  # turning: never reported
        watch.turn()
        time.sleep(0.05)
    print("turned", flush=True)
    watch.turn()
    stuck_in_a_call()
    watch.close()
    time.sleep(0.6)  # closed: no second dump
    """
)


def test_a_stalled_loop_leaves_its_stack_and_a_turning_one_does_not() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "turned"
    assert done.stderr.count("Timeout (") == 1, done.stderr
    assert "stuck_in_a_call" in done.stderr
