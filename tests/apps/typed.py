"""A Jobify app with PydanticConverter, on a Celery app and queue of its own."""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal

from celery import Celery
from jobify import Jobify
from jobify.typeadapter import PydanticConverter
from kombu import Queue
from pydantic import BaseModel

from jobify_celery import JobifyCelery
from tests.servers import BROKER_URL, RESULT_BACKEND

QUEUE = os.environ.get("JOBIFY_CELERY_TEST_QUEUE", "jobify-celery-test-local") + ".typed"

celery_app = Celery("typed", broker=BROKER_URL, backend=RESULT_BACKEND)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, queue_arguments={"x-expires": 120_000})],
    broker_connection_retry_on_startup=True,
    result_expires=600,
)

converter = PydanticConverter()
app = Jobify(dumper=converter, loader=converter, storage=False)
JobifyCelery(app, celery_app)


class Item(BaseModel):
    sku: str
    price: Decimal


class Cart(BaseModel):
    owner: str
    items: list[Item]
    created: datetime


class Quote(BaseModel):
    owner: str
    total: Decimal
    count: int


@app.task
async def quote(cart: Cart) -> Quote:
    return Quote(
        owner=cart.owner,
        total=sum((i.price for i in cart.items), Decimal(0)),
        count=len(cart.items),
    )
