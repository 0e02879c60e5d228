"""The plain Celery side of the benchmarks: no Jobify anywhere in its workers."""

from __future__ import annotations

import asyncio
import functools
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


@functools.cache
def _event_loop(pid: int) -> asyncio.AbstractEventLoop:
    """This worker process's event loop (keyed by pid: a forked child makes its own)."""
    del pid
    return asyncio.new_event_loop()


async def _async_noop() -> None:
    return None


@celery_app.task(name="bench.plain_async_noop")
def plain_async_noop() -> None:
    """The same async no-op as the Jobify route, run the do-it-yourself way.

    One event loop per worker process and ``run_until_complete`` per task:
    the cheapest way to run a coroutine from a plain Celery task (cheaper
    than ``asyncio.run``, which makes and closes a loop every time).
    """
    return _event_loop(os.getpid()).run_until_complete(_async_noop())


@celery_app.task(name="bench.plain_add")
def plain_add(a: int, b: int) -> int:
    return a + b
