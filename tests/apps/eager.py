"""An app shaped like a real one, for eager mode and the testing helpers (no server).

Outer middleware stamps a tenant into ``request_state``, inner middleware
records each run, the lifespan opens a resource, arguments and results are
typed; a job fails, one times out, one is retried by ``SmartRetry``, one pushes
another. ``build()`` makes a fresh pair (Celery on its in-memory broker and
cache backend), so every test starts from nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from celery import Celery
from jobify import INJECT, JobContext, Jobify, OuterContext, SmartRetry, State

from jobify_celery import JobifyCelery


@dataclass
class Order:
    order_id: int
    amount: Decimal


@dataclass
class Receipt:
    order_id: int
    total: Decimal
    tenant: str
    attempt: int


class Declined(Exception):
    pass


@dataclass
class EagerApp:
    celery_app: Celery
    app: Jobify
    #: What ran, in order: ("outer", name), ("inner", name, tenant), ...
    trail: list[tuple[Any, ...]] = field(default_factory=list)
    #: Attempts per key of ``flaky``.
    attempts: dict[str, int] = field(default_factory=dict)
    routes: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.routes[name]
        except KeyError:
            raise AttributeError(name) from None


def build(*, eager: bool = True, name: str = "eager") -> EagerApp:  # noqa: C901
    celery_app = Celery(name, broker="memory://", backend="cache+memory://")
    celery_app.conf.update(task_always_eager=eager)

    holder: dict[str, EagerApp] = {}

    def trail() -> list[tuple[Any, ...]]:
        return holder["app"].trail

    class StampTenant:
        async def __call__(self, call_next: Any, context: OuterContext) -> Any:
            trail().append(("outer", context.job.id))
            context.request_state["tenant"] = "acme"
            return await call_next(context)

    class RecordRun:
        async def __call__(self, call_next: Any, context: JobContext) -> Any:
            tenant = context.request_state.get("tenant")
            trail().append(("inner", context.job.id, tenant))
            return await call_next(context)

    @asynccontextmanager
    async def lifespan(_app: Jobify) -> AsyncIterator[dict[str, Any]]:
        trail().append(("lifespan", "enter"))
        yield {"rates": {"book": Decimal("1.5")}}
        trail().append(("lifespan", "exit"))

    app = Jobify(
        storage=False,
        lifespan=lifespan,
        middleware=[RecordRun()],
        outer_middleware=[StampTenant()],
    )
    JobifyCelery(app, celery_app)
    built = EagerApp(celery_app=celery_app, app=app)
    holder["app"] = built

    @app.task(name=f"{name}.charge")
    async def charge(order: Order, ctx: JobContext = INJECT, state: State = INJECT) -> Receipt:
        await asyncio.sleep(0)
        if order.amount < 0:
            msg = f"order {order.order_id} declined"
            raise Declined(msg)
        rate = state.rates["book"]
        return Receipt(
            order_id=order.order_id,
            total=order.amount * rate,
            tenant=ctx.request_state["tenant"],
            attempt=ctx.request_state.get("attempt", 1),
        )

    @app.task(name=f"{name}.slow", timeout=0.2)
    async def slow() -> str:
        await asyncio.sleep(5)
        return "never"

    @app.task(name=f"{name}.flaky", retry=SmartRetry(retries=3, initial_delay=0.01, jitter=False))
    async def flaky(key: str, fail_times: int) -> int:
        done = built.attempts.get(key, 0) + 1
        built.attempts[key] = done
        if done <= fail_times:
            msg = f"attempt {done} of {key} failed"
            raise ConnectionError(msg)
        return done

    @app.task(name=f"{name}.checkout")
    async def checkout(order_ids: list[int]) -> list[Decimal]:
        totals = []
        for order_id in order_ids:
            job = await charge.push(Order(order_id, Decimal(order_id)))
            totals.append((await job).total)
        return totals

    @app.task(name=f"{name}.add")
    def add(a: int, b: int) -> int:
        return a + b

    built.routes.update(charge=charge, slow=slow, flaky=flaky, checkout=checkout, add=add)
    return built
