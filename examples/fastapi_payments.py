"""A FastAPI service in front of the payments workflows (``topologies/payments.py``).

Run a worker and the service side by side:

    streamflow run topologies/payments.py --bootstrap localhost:9092
    STREAMFLOW_BOOTSTRAP=localhost:9092 uvicorn examples.fastapi_payments:service

    curl -X POST localhost:8000/accounts -d '{"account": "acct-1", "deposit": 100000}' \\
         -H 'content-type: application/json'
    curl -X POST localhost:8000/transfers -H 'content-type: application/json' \\
         -d '{"id": "t-1", "source": "acct-1", "target": "acct-2", "amount": 2500}'
    curl 'localhost:8000/transfers/t-1?wait=10'

One ``AsyncWorkflowClient`` serves every request. Starts return once the broker has them
(the transfer id is the instance id: a retried POST starts nothing twice). Reads ask the
worker that owns the instance, and ``?wait=S`` holds the request until the transfer has
ended (a long poll on that worker, not a loop here).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from streamflow.errors import PayloadTooLarge
from topologies.payments import Transfer
from topologies.payments import app as payments


class TransferIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    source: str
    target: str
    amount: int = Field(gt=0, description="cents")


class AccountIn(BaseModel):
    account: str
    deposit: int = Field(ge=0)


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with payments.async_client(os.environ.get("STREAMFLOW_BOOTSTRAP")) as client:
        api.state.client = client
        yield


service = FastAPI(title="payments", lifespan=lifespan)


def _view(view: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": view.id, "status": view.status}
    if view.done:
        result = view.result
        body["result"] = result if result is None or isinstance(result, dict) else vars(result)
        if view.header.get("error"):
            body["error"] = view.header["error"]["message"]
    return body


@service.post("/transfers", status_code=202)
async def start_transfer(body: TransferIn) -> dict[str, str]:
    transfer = Transfer(body.id, body.source, body.target, body.amount)
    try:
        await service.state.client.start("transfer", id=body.id, input=transfer)
    except PayloadTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    return {"id": body.id, "status": "accepted"}


@service.get("/transfers/{transfer_id}")
async def read_transfer(transfer_id: str, wait: float = 0.0) -> dict[str, Any]:
    client = service.state.client
    if wait > 0:
        try:
            return _view(await client.wait("transfer", transfer_id, timeout=min(wait, 60.0)))
        except TimeoutError:
            pass  # not ended yet: answer with what it is now
    view = await client.get("transfer", transfer_id)
    if view is None:
        raise HTTPException(404, f"no transfer {transfer_id!r}")
    return _view(view)


@service.post("/transfers/{transfer_id}/approve", status_code=202)
async def approve(transfer_id: str) -> dict[str, str]:
    await service.state.client.signal("transfer", transfer_id, "approved")
    return {"id": transfer_id, "status": "approval sent"}


@service.post("/transfers/{transfer_id}/cancel", status_code=202)
async def cancel(transfer_id: str) -> dict[str, str]:
    await service.state.client.cancel("transfer", transfer_id)
    return {"id": transfer_id, "status": "cancel sent"}


@service.post("/accounts", status_code=202)
async def open_account(body: AccountIn) -> dict[str, str]:
    await service.state.client.start(
        "open_account", id=f"open-{body.account}", input=body.model_dump()
    )
    return {"account": body.account, "status": "accepted"}
