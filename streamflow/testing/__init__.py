"""Run a topology in-process, with no broker: for users' unit tests and ours.

    driver = TestDriver(app, partitions=2)
    driver.pipe("orders", "alice", {"amount": 10})
    assert driver.read("totals") == [("alice", 10)]

``TestDriver`` (``testing/driver.py``) runs every task of the app with the real processor and
RocksDB store code, one committed cycle per ``pipe``; Kafka is replaced by in-memory topic logs
(``testing/topic_logs.py``), whose records are ``DriverMessage``s. ``driver.workflows`` is a
``DriverWorkflowClient`` (``testing/workflow_client.py``): ``app.client()``'s API against the
driver.
"""

from __future__ import annotations

from streamflow.testing.driver import MAX_FIRINGS, TestDriver
from streamflow.testing.topic_logs import DriverMessage
from streamflow.testing.workflow_client import DriverWorkflowClient

__all__ = ["MAX_FIRINGS", "DriverMessage", "DriverWorkflowClient", "TestDriver"]
