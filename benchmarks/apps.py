"""The apps the benchmarks run: one Celery app, plain tasks beside Jobify routes."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from celery import Celery
from jobify import INJECT, JobContext, Jobify
from kombu import Queue

from jobify_celery import JobifyCelery

QUEUE = os.environ.get("BENCH_QUEUE", "jobify-celery-bench")
celery_app = Celery(
    "bench",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, queue_arguments={"x-expires": 600_000})],
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=4,
    result_expires=600,
)
app = Jobify(storage=False)
JobifyCelery(app, celery_app)


@celery_app.task(name="bench.plain_noop")
def plain_noop() -> None:
    return None


@app.task(name="bench.jobify_noop")
async def jobify_noop() -> None:
    return None


@celery_app.task(name="bench.plain_add")
def plain_add(a: int, b: int) -> int:
    return a + b


@app.task(name="bench.jobify_add")
async def jobify_add(a: int, b: int) -> int:
    return a + b


@celery_app.task(name="bench.plain_lateness")
def plain_lateness(planned: float) -> float:
    """Seconds between the planned start (epoch) and now."""
    return time.time() - planned


@app.task(name="bench.jobify_lateness")
async def jobify_lateness(ctx: JobContext = INJECT) -> float:
    return (datetime.now(UTC) - ctx.job.exec_at).total_seconds()
