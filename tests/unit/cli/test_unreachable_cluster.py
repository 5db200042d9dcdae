"""Commands against a cluster that is not there say so in one line, within seconds.
(Nothing listens on 127.0.0.1:1: a real refusal, no broker needed.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
APP = REPO / "tests" / "apps" / "client_app.py"


@pytest.mark.parametrize(
    "command",
    [
        ["status", str(APP)],
        ["dlq", "list", str(APP)],
        ["workflows", "show", str(APP), "sized", "x"],
        ["workflows", "start", str(APP), "sized", "x", '"abc"'],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_one_line_naming_the_address(command: list[str]) -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamflow", *command, "--bootstrap", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in lines[0]
    assert time.monotonic() - began < 30
