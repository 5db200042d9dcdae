"""The group-coordinator probe runs in a child process: its crash is one failed try."""

from __future__ import annotations

import socket

import pytest

from streamflow.dev import readiness


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_probe_that_crashes_is_reported_and_the_caller_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(readiness, "PROBE_CODE", "import os, signal; os.abort()")
    answer = readiness._probe_group_coordinator({"bootstrap.servers": "127.0.0.1:1"}, 1.0)
    assert answer is not None and f"signal {6}" in answer


def test_no_coordinator_is_not_ready_and_says_why() -> None:
    config = {"bootstrap.servers": f"127.0.0.1:{_closed_port()}", "log_level": 0}
    answer = readiness._probe_group_coordinator(config, 1.0)
    assert answer is not None and answer.strip()
