"""A Celery project in the middle of its move to Jobify (the migration tests).

Wrapped Celery tasks (``@app.task`` on ``@celery_app.task``/``@shared_task``)
beside native Jobify routes, on an existing RabbitMQ topology: a topic
exchange with a routed queue, and a priority queue.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from typing import Any

from celery import Celery, shared_task, signals
from jobify import INJECT, JobContext, Jobify
from kombu import Exchange, Queue

from jobify_celery import JobifyCelery
from tests.apps.shop import record
from tests.servers import BROKER_URL, RESULT_BACKEND

BASE = os.environ.get("JOBIFY_CELERY_TEST_QUEUE", "jobify-celery-test-local")
QUEUE = f"{BASE}.legacy"
INVOICES = f"{BASE}.invoices"
PRIORITY = f"{BASE}.priority"
BILLING_EXCHANGE = Exchange(f"{BASE}.billing-x", type="topic", durable=False, auto_delete=True)
EXPIRES = {"x-expires": 120_000}

celery_app = Celery("legacy", broker=BROKER_URL, backend=RESULT_BACKEND)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[
        Queue(QUEUE, queue_arguments=EXPIRES),
        Queue(INVOICES, BILLING_EXCHANGE, routing_key="invoice.#", queue_arguments=EXPIRES),
        Queue(PRIORITY, queue_arguments={**EXPIRES, "x-max-priority": 10}),
    ],
    task_routes={
        "legacy.route_me": {
            "exchange": BILLING_EXCHANGE.name,
            "exchange_type": "topic",
            "routing_key": "invoice.created",
        },
    },
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


class RecordRuns:
    async def __call__(self, call_next: Any, ctx: JobContext) -> Any:
        request = ctx.request_state["celery_request"]
        record(f"legacy:{request.id}", f"middleware:{request.task}")
        return await call_next(ctx)


app = Jobify(middleware=[RecordRuns()], storage=False)
JobifyCelery(app, celery_app)


@dataclasses.dataclass
class Point:
    x: float
    y: float


@app.task
@celery_app.task(bind=True, name="legacy.greet", max_retries=2, default_retry_delay=0.2)
def greet(self: Any, name: str, fail_first: bool = False) -> str:
    if fail_first and self.request.retries == 0:
        raise self.retry(exc=RuntimeError("first try fails"))
    return f"hello {name} (retries={self.request.retries}, task={self.request.id})"


@app.task
@shared_task(name="legacy.varargs")
def varargs(*args: Any) -> list[Any]:
    return list(args)


@app.task
@celery_app.task(name="legacy.norm")
def norm(point: Point) -> float:
    return math.hypot(point.x, point.y)


@celery_app.task(name="legacy.plain_thread")
def plain_thread() -> str:
    """A plain Celery task, never moved to Jobify: where does it run?"""
    return threading.current_thread().name


@app.task(name="legacy.make_point")
async def make_point(x: float, y: float) -> Point:
    return Point(x, y)


@app.task(name="legacy.route_me")
async def route_me(n: int, ctx: JobContext = INJECT) -> str:
    info = ctx.request_state["celery_request"].delivery_info
    return f"routed {n} via {info['exchange']} {info['routing_key']}"


@app.task(name="legacy.prioritised", metadata={"celery": {"queue": PRIORITY}})
async def prioritised(label: str) -> str:
    record("legacy:priority-order", label)
    return label


@signals.task_prerun.connect
def _legacy_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if getattr(task, "name", "").startswith("legacy."):
        record(f"legacy:{task_id}", "signal:prerun")
