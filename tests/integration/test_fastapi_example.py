"""The FastAPI example (examples/fastapi_payments.py) against a real worker and broker."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.engine_helpers import REPO, WorkerProcess

pytestmark = pytest.mark.kafka


def test_the_service_starts_reads_waits_and_approves(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {"PAYMENTS_APP": f"pay-{uuid.uuid4().hex[:8]}", "STREAMFLOW_BOOTSTRAP": kafka_bootstrap}
    worker = WorkerProcess(
        REPO / "topologies" / "payments.py",
        kafka_bootstrap,
        tmp_path / "w",
        env,
        tmp_path / "w.log",
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    for name in ("topologies.payments", "examples.fastapi_payments"):
        sys.modules.pop(name, None)
    try:
        example = importlib.import_module("examples.fastapi_payments")
        with TestClient(example.service) as http:
            assert (
                http.post("/accounts", json={"account": "a1", "deposit": 100_000}).status_code
                == 202
            )
            sync = example.payments.client(kafka_bootstrap)
            assert sync.wait("open_account", "open-a1", timeout=120).result == 100_000
            sync.close()

            transfer = {"id": "t-1", "source": "a1", "target": "a2", "amount": 2_500}
            assert http.post("/transfers", json=transfer).status_code == 202
            assert http.post("/transfers", json=transfer).status_code == 202  # a retried POST
            done = http.get("/transfers/t-1", params={"wait": 60}).json()
            assert done["status"] == "completed" and done["result"]["status"] == "completed"

            big = {"id": "t-2", "source": "a1", "target": "a2", "amount": 20_000}
            assert http.post("/transfers", json=big).status_code == 202
            waiting = http.get("/transfers/t-2", params={"wait": 2}).json()
            assert waiting["status"] == "running"  # it waits for an approval
            assert http.post("/transfers/t-2/approve").status_code == 202
            approved = http.get("/transfers/t-2", params={"wait": 60}).json()
            assert approved["result"]["status"] == "completed"

            assert http.get("/transfers/nobody").status_code == 404
            assert http.post("/transfers", json={**transfer, "amount": -1}).status_code == 422
    finally:
        worker.terminate()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for name in ("topologies.payments", "examples.fastapi_payments"):
            sys.modules.pop(name, None)
