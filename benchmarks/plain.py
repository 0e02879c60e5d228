"""The plain Celery side of the benchmarks: no Jobify anywhere in its workers."""

from __future__ import annotations

import os

from benchmarks._celery import bench_celery_app

QUEUE = os.environ.get("BENCH_QUEUE", "jobify-celery-bench") + ".plain"
celery_app = bench_celery_app(
    "bench_plain",
    QUEUE,
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
