"""jobify-celery in one file: a Jobify app whose jobs run on a Celery worker.

Run it with no server at all::

    python examples/quickstart.py

It uses Celery's in-memory broker and result store and starts a Celery worker
inside this process. Point it at real servers and nothing else changes::

    BROKER_URL=amqp://guest:guest@127.0.0.1:5672// \
    RESULT_BACKEND=redis://127.0.0.1:6379/0 python examples/quickstart.py

In production the worker is its own process:
``celery -A examples.quickstart:celery_app worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from decimal import Decimal
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker
from jobify import INJECT, JobContext, Jobify, OuterContext
from jobify.exceptions import JobFailedError
from jobify.middleware import CallNext
from kombu import Queue

from jobify_celery import JobifyCelery

BROKER_URL = os.environ.get("BROKER_URL", "memory://localhost//")
RESULT_BACKEND = os.environ.get("RESULT_BACKEND", "cache+memory://")
# A queue of its own, so a shared broker's other consumers never take our jobs.
QUEUE = f"jobify-quickstart-{uuid.uuid4().hex[:8]}"

celery_app = Celery("quickstart", broker=BROKER_URL, backend=RESULT_BACKEND)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, queue_arguments={"x-expires": 60_000})],
    broker_connection_retry_on_startup=True,
    # The in-memory broker polls; a short interval keeps the demo snappy.
    broker_transport_options={"polling_interval": 0.01},
)

TRACE: list[str] = []


class StampTenant:
    """Outer middleware: runs in the producer when a job is pushed."""

    async def __call__(self, call_next: Any, context: OuterContext) -> Any:
        context.request_state["tenant"] = "acme"
        TRACE.append(f"outer: publish {context.schedule_builder.name} for tenant acme")
        return await call_next(context)


class LogRun:
    """Inner middleware: runs in the worker, around the job function."""

    async def __call__(self, call_next: CallNext, context: JobContext) -> Any:
        tenant = context.request_state.get("tenant")
        TRACE.append(f"inner: start job {context.job.id[:8]} (tenant {tenant})")
        try:
            return await call_next(context)
        finally:
            TRACE.append(f"inner: end job {context.job.id[:8]}")


app = Jobify(middleware=[LogRun()], outer_middleware=[StampTenant()], storage=False)
JobifyCelery(app, celery_app)


@dataclasses.dataclass
class Receipt:
    order_id: int
    amount: Decimal
    worker_task_id: str


@app.task
async def charge(order_id: int, ctx: JobContext = INJECT) -> Receipt:
    """Charge an order; negative ids do not exist."""
    if order_id < 0:
        msg = f"order {order_id} does not exist"
        raise ValueError(msg)
    await asyncio.sleep(0.01)
    TRACE.append(f"job: charge({order_id}) ran")
    request = ctx.request_state["celery_request"]
    return Receipt(order_id=order_id, amount=Decimal("19.99"), worker_task_id=request.id)


async def main() -> None:
    async with app:
        # An embedded worker, started once the app runs so it shares its loop.
        # (Starting and stopping it blocks, so it happens off the loop.)
        stack = contextlib.ExitStack()
        worker = start_worker(
            celery_app,
            pool="solo",
            perform_ping_check=False,
            loglevel="WARNING",
            hostname=f"quickstart@{socket.gethostname()}",
            shutdown_timeout=60,
        )
        await asyncio.to_thread(stack.enter_context, worker)
        # The failing job below is on purpose: keep its traceback out of the demo.
        logging.getLogger("celery.app.trace").setLevel(logging.CRITICAL)

        job = await charge.push(42)
        receipt = await job
        print(f"pushed charge(42) as job {job.id}: {job.status} -> {receipt}")

        failed = await charge.push(-1)
        await failed.wait()
        print(f"pushed charge(-1) as job {failed.id}: {failed.status} -> {failed.exception!r}")
        try:
            failed.result()
        except JobFailedError as exc:
            print(f"failed.result() raised JobFailedError: {exc.reason}")

        print("middleware trace:")
        for line in TRACE:
            print(f"  {line}")
        await asyncio.to_thread(stack.close)


if __name__ == "__main__":
    asyncio.run(main())
