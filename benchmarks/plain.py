"""The plain Celery side of the benchmarks: no Jobify anywhere in its workers."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

QUEUE = os.environ.get("BENCH_QUEUE", "jobify-celery-bench") + ".plain"
celery_app = Celery(
    "bench_plain",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[
        Queue(QUEUE)
    ],  # deleted by each benchmark; no x-expires (kombu re-declares those on every publish)
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=4,
    result_expires=600,
    # benchmarks.drain also runs plain Celery with jobify-celery's delivery
    # defaults (acknowledge late, redeliver when a worker dies).
    task_acks_late=os.environ.get("BENCH_PLAIN_ACKS_LATE") == "1",
    task_reject_on_worker_lost=os.environ.get("BENCH_PLAIN_ACKS_LATE") == "1",
)


@celery_app.task(name="bench.plain_noop")
def plain_noop() -> None:
    return None


@celery_app.task(name="bench.plain_add")
def plain_add(a: int, b: int) -> int:
    return a + b
