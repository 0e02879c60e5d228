"""The realistic pair of benchmark apps: an app shaped like a real one.

The bare apps (``apps``, ``plain``) measure the bridge with nothing of the
user's in it. Real apps carry more, and the bridge's cost may grow with it.
The realistic Jobify app has

* two outer middlewares: one puts the caller's tenant into ``request_state``
  (which then travels in every message's header), one may veto a push
  (a quota; it never does here);
* one inner middleware around every run (it times the run);
* a lifespan that opens a Redis client once per process;
* SQLite storage (``BENCH_REAL_DB``, one file all processes share);
* a router with a prefix, its route taking a dataclass with a ``Decimal`` and
  returning one;
* a queue declared with ``x-expires``;
* a job that does one Redis ``INCR`` and builds its receipt.

Its plain Celery counterpart, doing the same user work, is
``benchmarks.realistic_plain``.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import redis
from jobify import INJECT, JobContext, Jobify, JobRouter, OuterContext
from jobify.storage import SQLiteStorage

from benchmarks._celery import bench_celery_app
from benchmarks.realistic_plain import COUNTER, DB, QUEUE, TENANT, Order, Receipt, declared_queue
from jobify_celery import JobifyCelery

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from jobify.middleware import CallNext, CallNextOuter

logger = logging.getLogger("bench.realistic")

celery_app = bench_celery_app("bench_real", QUEUE, task_queues=[declared_queue(QUEUE)])


class AddTenant:
    """Outer: who asked; read by the inner middleware and the job in the worker."""

    async def __call__(self, call_next: CallNextOuter, context: OuterContext) -> Any:
        context.request_state["tenant"] = TENANT
        return await call_next(context)


class Quota:
    """Outer: refuses pushes of a blocked tenant (none is blocked here)."""

    blocked: frozenset[str] = frozenset({"mallory"})

    async def __call__(self, call_next: CallNextOuter, context: OuterContext) -> Any:
        if context.request_state.get("tenant") in self.blocked:
            return None
        return await call_next(context)


class Timed:
    """Inner: times every run (a log line only when one is slow)."""

    async def __call__(self, call_next: CallNext, context: JobContext) -> Any:
        started = time.perf_counter()
        try:
            return await call_next(context)
        finally:
            spent = time.perf_counter() - started
            if spent > 1.0:
                logger.warning("slow job %s: %.1f s", context.job.id, spent)


@asynccontextmanager
async def lifespan(_app: Jobify) -> AsyncIterator[dict[str, Any]]:
    client = redis.Redis.from_url(celery_app.conf.result_backend)
    try:
        yield {"redis": client}
    finally:
        client.close()


app = Jobify(
    storage=SQLiteStorage(DB),
    outer_middleware=[AddTenant(), Quota()],
    middleware=[Timed()],
    lifespan=lifespan,
)
JobifyCelery(app, celery_app)
orders = JobRouter(prefix="orders")


@orders.task(name="place")
async def place(order: Order, ctx: JobContext = INJECT) -> Receipt:
    placed = int(ctx.state.redis.incr(COUNTER))
    return Receipt(
        order_id=order.order_id,
        tenant=ctx.request_state["tenant"],
        total=order.unit_price * order.quantity,
        placed=placed,
    )


app.include_router(orders)
