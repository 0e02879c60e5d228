"""The apps of the I/O-bound benchmark (``async_io``): a 50 ms wait, then a Redis INCR.

``celery_app``/``app``: a Jobify app whose job awaits, then bumps a counter
through an asyncio Redis client its lifespan opens (one per worker process,
with a blocking pool: redis-py's default pool refuses the 101st connection).
``plain_app``: plain Celery doing the same with a sync sleep and a sync client,
for the threads and gevent pools. Both read their queue from ``BENCH_QUEUE``.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from jobify import INJECT, Jobify, State

from benchmarks._celery import bench_celery_app
from jobify_celery import JobifyCelery

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BASE = os.environ.get("BENCH_QUEUE", "jobify-celery-bench")
QUEUE = f"{BASE}.io"
PLAIN_QUEUE = f"{BASE}.io-plain"
REDIS_URL = os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0")
#: Connections each worker process keeps to Redis for the jobs' INCRs.
REDIS_CONNECTIONS = 50
#: What every job waits, as if on the network.
WAIT_SECONDS = 0.05

# Prefetch follows concurrency: each worker takes as many messages as it runs.
celery_app = bench_celery_app("bench_io", QUEUE, worker_prefetch_multiplier=1)


@asynccontextmanager
async def lifespan(_app: Jobify) -> AsyncIterator[dict[str, Any]]:
    pool = aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=REDIS_CONNECTIONS)
    client = aioredis.Redis(connection_pool=pool)
    yield {"redis": client}
    await client.aclose()


app = Jobify(storage=False, lifespan=lifespan)
# BENCH_TUNE_GC=0: the asyncio pool leaves Python's collector as it is (async_io compares).
JobifyCelery(app, celery_app, pool="asyncio", tune_gc=os.environ.get("BENCH_TUNE_GC") != "0")


@app.task(name="bench.io_job")
async def io_job(counter: str, state: State = INJECT) -> None:
    await asyncio.sleep(WAIT_SECONDS)
    await state.redis.incr(counter)


@app.task(name="bench.io_hold")
async def io_hold(counter: str, seconds: float, state: State = INJECT) -> None:
    """Count its start, stay in flight for ``seconds``, then count its end."""
    await state.redis.incr(f"{counter}:started")
    await asyncio.sleep(seconds)
    await state.redis.incr(counter)


@app.task(name="bench.io_noop")
async def io_noop() -> None:
    return None


plain_app = bench_celery_app("bench_io_plain", PLAIN_QUEUE, worker_prefetch_multiplier=1)
_plain_redis = redis.Redis(
    connection_pool=redis.BlockingConnectionPool.from_url(
        REDIS_URL, max_connections=REDIS_CONNECTIONS
    )
)


@plain_app.task(name="bench.io_plain_job")
def io_plain_job(counter: str) -> None:
    time.sleep(WAIT_SECONDS)
    _plain_redis.incr(counter)
