"""A FastAPI producer: the Jobify app lives in FastAPI's lifespan, endpoints push jobs.

    uvicorn examples.fastapi_app.main:api            # the web process
    celery -A examples.shop.tasks:celery_app worker  # and a worker, anywhere

``POST /orders/{order_id}/charge`` pushes ``charge`` and waits for its receipt
(up to ``WAIT_SECONDS``); ``POST /orders/{order_id}/charge-later`` pushes it and
answers at once with the job id; ``GET /jobs/{job_id}`` reads any job's state
from the result backend, as Celery stores it (its result is readable JSON). A
push never blocks the event loop, so one web process serves many requests
while their jobs run on the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from examples.shop.tasks import app, celery_app, charge

WAIT_SECONDS = 10.0


class ChargeRequest(BaseModel):
    items: list[str]


@asynccontextmanager
async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
    async with app:  # the Jobify app: producer connections, result watcher
        yield


api = FastAPI(lifespan=lifespan)


@api.post("/orders/{order_id}/charge")
async def charge_now(order_id: int, body: ChargeRequest) -> dict[str, Any]:
    job = await charge.push(order_id, body.items)
    try:
        receipt = await asyncio.wait_for(job, WAIT_SECONDS)
    except TimeoutError:
        raise HTTPException(504, f"job {job.id} is still running") from None
    return {"job_id": job.id, "total": str(receipt.total), "request_id": receipt.request_id}


@api.post("/orders/{order_id}/charge-later", status_code=202)
async def charge_later(order_id: int, body: ChargeRequest) -> dict[str, str]:
    job = await charge.push(order_id, body.items)
    return {"job_id": job.id}


@api.get("/jobs/{job_id}")
async def job_status(job_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        stored = celery_app.AsyncResult(job_id)
        answer: dict[str, Any] = {"job_id": job_id, "state": stored.state}
        if stored.successful():
            answer["result"] = stored.result  # plain JSON: the receipt's fields
        return answer

    # The backend client blocks: a thread reads it, the loop serves on.
    return await asyncio.to_thread(read)
