"""The module every role imports: producers, `celery worker` (and later beat).

    celery -A examples.shop.tasks:celery_app worker -l info

Always name the Celery app (`module:celery_app`): `celery -A module` looks for
an attribute called `app` first and would find the Jobify app.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from celery import Celery
from jobify import INJECT, JobContext, Jobify, OuterContext
from jobify.middleware import CallNext, CallNextOuter
from kombu import Queue

from jobify_celery import JobifyCelery

logger = logging.getLogger("shop")

QUEUE = os.environ.get("SHOP_QUEUE", "shop")

celery_app = Celery(
    "shop",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE)],
    broker_connection_retry_on_startup=True,
)


@asynccontextmanager
async def lifespan(_app: Jobify) -> AsyncIterator[dict[str, Any]]:
    # Entered once per worker process (and once per producer): open pools here.
    yield {"prices": {"book": Decimal("12.50"), "pen": Decimal("1.20")}}


class AddRequestId:
    """Outer middleware (producer): what it stores travels to the worker."""

    async def __call__(self, call_next: CallNextOuter, context: OuterContext) -> Any:
        context.request_state["request_id"] = f"req-{context.job.id[:8]}"
        return await call_next(context)


class LogJob:
    """Inner middleware (worker): wraps every run."""

    async def __call__(self, call_next: CallNext, context: JobContext) -> Any:
        logger.info("start %s %s", context.job.id, dict(context.request_state).get("request_id"))
        result = await call_next(context)
        logger.info("done %s", context.job.id)
        return result


# storage=False: this app has no crons to keep (a default Jobify() would write
# jobify.db into the working directory of every process).
app = Jobify(
    middleware=[LogJob()], outer_middleware=[AddRequestId()], lifespan=lifespan, storage=False
)
JobifyCelery(app, celery_app)


@dataclasses.dataclass
class Receipt:
    order_id: int
    total: Decimal
    request_id: str


@app.task(timeout=30)
async def charge(order_id: int, items: list[str], ctx: JobContext = INJECT) -> Receipt:
    prices: dict[str, Decimal] = ctx.state.prices
    total = sum((prices[item] for item in items), Decimal(0))
    return Receipt(order_id=order_id, total=total, request_id=ctx.request_state["request_id"])
