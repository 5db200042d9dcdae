"""The metrics text is what Prometheus' own parser reads, with the figures that were counted."""

from __future__ import annotations

import json
import logging
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from streamflow.operate.dead_letters import parse_since
from streamflow.operate.http_endpoint import HttpEndpoint, WorkerCalls
from streamflow.operate.metrics import Metrics, Snapshot, TaskFigures
from streamflow.runtime.log_format import JsonFormatter
from streamflow.runtime.step_executor import AttemptId, LongAttempt


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _metrics() -> Metrics:
    m = Metrics()
    m.snapshot = Snapshot(
        app='odd "app"\\name',
        tasks=[
            TaskFigures("0_0", "running", 10, 2.5, 1, [("in", 0, 7, 9)]),
            TaskFigures("0_1", "restoring", 0, 0.0, 0, [], restore_done=30, restore_total=100),
        ],
        long_attempts=[
            LongAttempt(AttemptId("charge", "order-7", 2, 3, False), 75.5, 30.0, True),
            LongAttempt(AttemptId("charge", "order-9", 0, 1, True), 64.0, None, False),
            LongAttempt(AttemptId("mail", "order-7", 4, 1, False), 61.0, None, False),
        ],
    )
    for took in (0.002, 0.02, 0.2):
        m.committed(took)
    m.aborted()
    m.step_attempt("charge", "ok", 0.03, 1)
    m.step_attempt("charge", "failed", 0.04, 2)
    m.step_attempt("charge", "timed_out", None, 3)
    m.workflow_transition("transfer", "completed")
    return m


def test_rendered_text_parses_and_carries_the_counts() -> None:
    fams = _families(_metrics().render())
    processed = {s.labels["task"]: s.value for s in fams["streamflow_records_processed"]}
    assert processed == {"0_0": 10, "0_1": 0}
    assert all(s.labels["app"] == 'odd "app"\\name' for s in fams["streamflow_records_processed"])
    lag = fams["streamflow_consumer_lag_records"]
    assert [(s.labels["topic"], s.value) for s in lag] == [("in", 2)]
    remaining = fams["streamflow_restore_remaining_records"]
    assert [(s.labels["task"], s.value) for s in remaining] == [("0_1", 70)]
    assert fams["streamflow_transactions"][0].value == 3
    assert fams["streamflow_transaction_aborts"][0].value == 1
    buckets = {
        s.labels["le"]: s.value
        for s in fams["streamflow_commit_latency_seconds"]
        if s.name.endswith("_bucket")
    }
    assert buckets["0.001"] == 0 and buckets["0.0025"] == 1 and buckets["0.025"] == 2
    assert buckets["0.25"] == 3 and buckets["+Inf"] == 3
    attempts = {
        s.labels["outcome"]: s.value
        for s in fams["streamflow_step_attempts"]
        if s.name.endswith("_total")
    }
    assert attempts == {"ok": 1, "failed": 1, "timed_out": 1}
    assert fams["streamflow_step_retries"][0].value == 2
    step_count = [s for s in fams["streamflow_step_latency_seconds"] if s.name.endswith("_count")]
    assert step_count[0].value == 2  # the timed-out attempt has no duration
    hung = {s.labels["step"]: s.value for s in fams["streamflow_step_attempts_hung"]}
    assert hung == {"charge": 2, "mail": 1}
    transitions = fams["streamflow_workflow_transitions"]
    assert [(s.labels["status"], s.value) for s in transitions] == [("completed", 1)]


def test_endpoint_serves_metrics_status_and_worker_calls() -> None:
    m = _metrics()
    endpoint = HttpEndpoint(m, "127.0.0.1", 0)
    calls = WorkerCalls()
    endpoint.routes["/ask"] = lambda _p, _q: (200, json.dumps(calls.call(lambda: 42)).encode(), "x")
    endpoint.start()
    try:
        base = f"http://{endpoint.address}"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            assert "streamflow_transactions_total" in r.read().decode()
        with urllib.request.urlopen(base + "/status", timeout=5) as r:
            body = json.loads(r.read())
        assert [t["state"] for t in body["tasks"]] == ["running", "restoring"]
        assert body["hung_attempts"][0] == {
            "step": "charge",
            "instance_id": "order-7",
            "seq": 2,
            "attempt": 3,
            "age_seconds": 75.5,
            "timeout_seconds": 30.0,
            "past_timeout": True,
            "void": False,
        }
        assert len(body["hung_attempts"]) == 3
        import threading

        answer: list[bytes] = []
        asker = threading.Thread(
            target=lambda: answer.append(urllib.request.urlopen(base + "/ask", timeout=5).read())
        )
        asker.start()
        while not calls.pending:  # the worker thread answers between batches
            pass
        calls.run_pending()
        asker.join(5)
        assert answer == [b"42"]
        try:
            urllib.request.urlopen(base + "/nothing", timeout=5)
            raise AssertionError("404 expected")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        endpoint.close()


def test_json_log_lines_are_one_object_each_with_the_traceback_inside() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("w", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    event = json.loads(line)
    assert event["msg"] == "failed x" and event["level"] == "error"
    assert "ValueError: bad\nvalue" in event["exc"]


def test_since_accepts_ages_times_and_millis() -> None:
    assert parse_since("1700000000000") == 1_700_000_000_000
    assert parse_since("2023-11-14T22:13:20+00:00") == 1_700_000_000_000
    assert parse_since(None) is None
    import time

    assert abs(parse_since("2h") - (time.time() * 1000 - 7_200_000)) < 5000  # type: ignore[operator]


def test_progress_lines_only_on_a_terminal() -> None:
    import io

    from streamflow.runtime.log_format import ProgressLine

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    piped, tty = io.StringIO(), Tty()
    for stream in (piped, tty):
        bar = ProgressLine("restoring", stream)
        bar.show(500, 1000)
        bar.show(1000, 1000)
        bar.done()
    assert piped.getvalue() == ""
    shown = "\rrestoring: 500 / ~1,000 (50%)   \rrestoring: 1,000 / ~1,000 (100%)   \n"
    assert tty.getvalue() == shown
