"""A small Jobify app for the shutdown and fault tests: no router, so it starts again and again.

Its broker and result backend come from the environment (``TALLY_BROKER_URL``,
``TALLY_RESULT_BACKEND``), so a fault test can put its TCP proxy or a private
Redis in front of them, for the producer and for the `celery worker` it starts
alike. Every run is counted in the shared Redis (never faulted), keyed by the
run's job id: ``runs(ns)`` tells how many times each job started and
``finished(ns)`` which ones got to their end, so a test counts lost and
duplicated jobs without trusting the servers it breaks.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import redis
from celery import Celery
from jobify import INJECT, JobContext, Jobify, SmartRetry
from kombu import Queue

from jobify_celery import JobifyCelery
from tests.servers import BROKER_URL, RESULT_BACKEND

BASE_QUEUE = os.environ.get("JOBIFY_CELERY_TEST_QUEUE", "jobify-celery-test-local")
QUEUE = os.environ.get("TALLY_QUEUE", f"{BASE_QUEUE}.tally")
SIDE_CHANNEL = RESULT_BACKEND
EXPIRES_MS = 120_000

celery_app = Celery(
    "tally",
    broker=os.environ.get("TALLY_BROKER_URL", BROKER_URL),
    backend=os.environ.get("TALLY_RESULT_BACKEND", RESULT_BACKEND),
)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, queue_arguments={"x-expires": EXPIRES_MS})],
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@asynccontextmanager
async def lifespan(_app: Jobify) -> AsyncIterator[None]:
    yield
    # When this process left the app (for the worker shutdown tests).
    client = _side()
    try:
        key = f"{QUEUE}:lifespan-exits"
        client.rpush(key, f"{os.getpid()}:{time.time()!r}")
        client.expire(key, 900)
    finally:
        client.close()


def lifespan_exits(since: float) -> dict[int, float]:
    """When each process left the app, for exits at ``since`` or later."""
    client = _side()
    try:
        rows = [v.decode().split(":") for v in client.lrange(f"{QUEUE}:lifespan-exits", 0, -1)]
    finally:
        client.close()
    return {int(pid): float(at) for pid, at in rows if float(at) >= since}


app = Jobify(storage=False, lifespan=lifespan)
JobifyCelery(app, celery_app)


def _side() -> redis.Redis:
    return redis.Redis.from_url(SIDE_CHANNEL)


def _count(ns: str, field: str, job_id: str) -> None:
    client = _side()
    try:
        key = f"{QUEUE}:{ns}:{field}"
        client.hincrby(key, job_id, 1)
        client.expire(key, 900)
    finally:
        client.close()


def _note_end(ns: str) -> None:
    client = _side()
    try:
        key = f"{QUEUE}:{ns}:ends"
        client.rpush(key, repr(time.time()))
        client.expire(key, 900)
    finally:
        client.close()


def ends(ns: str) -> list[float]:
    """When each job of namespace ``ns`` reached its end (wall clock)."""
    client = _side()
    try:
        return [float(v) for v in client.lrange(f"{QUEUE}:{ns}:ends", 0, -1)]
    finally:
        client.close()


def runs(ns: str) -> dict[str, int]:
    """How many times each job of namespace ``ns`` started."""
    return _read(ns, "runs")


def finished(ns: str) -> dict[str, int]:
    """How many times each job of namespace ``ns`` reached its end."""
    return _read(ns, "finished")


def _read(ns: str, field: str) -> dict[str, int]:
    client = _side()
    try:
        raw = client.hgetall(f"{QUEUE}:{ns}:{field}")
    finally:
        client.close()
    return {key.decode(): int(value) for key, value in raw.items()}


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


@app.task
async def work(ns: str, seconds: float = 0.0, ctx: JobContext = INJECT) -> str:
    """Count a start, sleep, count an end; return the job id."""
    _count(ns, "runs", ctx.job.id)
    if seconds:
        await asyncio.sleep(seconds)
    _count(ns, "finished", ctx.job.id)
    _note_end(ns)
    return ctx.job.id


@app.task
async def fail(ns: str, ctx: JobContext = INJECT) -> None:
    """Count a start, then fail."""
    _count(ns, "runs", ctx.job.id)
    msg = f"job {ctx.job.id} fails on purpose"
    raise RuntimeError(msg)


@app.task(retry=SmartRetry(retries=2, initial_delay=0.1, jitter=False))
async def price(ns: str, amount: Decimal, shade: Shade, ctx: JobContext = INJECT) -> str:
    """Typed arguments on a retrying route: poison values must fail once, not three times."""
    _count(ns, "runs", ctx.job.id)
    return f"{amount}:{shade.value}"


@app.task
async def nested(value: list[object]) -> int:
    """Takes any nesting (the push side is what is probed)."""
    return len(value)
