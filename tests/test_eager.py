"""Eager mode (``task_always_eager``): jobs run in the test's process, as in a worker.

No server: Celery's in-memory broker and cache backend, and nothing is sent.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from jobify import JobStatus
from jobify.exceptions import JobFailedError, JobTimeoutError

from tests.apps import eager
from tests.apps.eager import Declined, Order, Receipt


def _run(built: eager.EagerApp, work: Any) -> Any:
    async def main() -> Any:
        async with built.app:
            return await asyncio.wait_for(work(), 30)

    return asyncio.run(main())


def test_a_push_runs_the_job_through_both_chains_and_returns_its_typed_result() -> None:
    built = eager.build()

    async def work() -> Any:
        job = await built.charge.push(Order(7, Decimal("2.00")))
        status = job.status
        return job, status, await job

    job, status, receipt = _run(built, work)
    assert status is JobStatus.SUCCESS  # ended before push returned
    assert receipt == Receipt(order_id=7, total=Decimal("3.000"), tenant="acme", attempt=1)
    assert ("outer", job.id) in built.trail
    assert ("inner", job.id, "acme") in built.trail  # request_state crossed as on the wire
    assert built.trail[0] == ("lifespan", "enter")
    assert built.trail[-1] == ("lifespan", "exit")
    assert not built.app.get_active_jobs()


def test_a_failing_job_raises_its_error_on_await() -> None:
    built = eager.build()

    async def work() -> Any:
        job = await built.charge.push(Order(1, Decimal(-1)))
        with pytest.raises(JobFailedError, match="order 1 declined") as caught:
            await job
        assert type(caught.value.__cause__) is Declined
        return job

    job = _run(built, work)
    assert job.status is JobStatus.FAILED
    assert isinstance(job.exception, Declined)  # the error itself, as the job raised it


def test_a_timeout_and_a_retry_behave_as_in_a_worker() -> None:
    built = eager.build()

    async def work() -> Any:
        slow = await built.slow.push()
        await slow.wait()
        flaky = await built.flaky.push("k", 2)
        return slow, await flaky

    slow, attempts = _run(built, work)
    assert slow.status is JobStatus.TIMEOUT
    assert isinstance(slow.exception, JobTimeoutError)
    assert attempts == 3  # two failures retried by SmartRetry, then success
    assert built.attempts["k"] == 3


def test_a_job_pushes_another_and_awaits_it() -> None:
    built = eager.build()

    async def main() -> Any:
        async with built.app:
            job = await built.checkout.push([1, 2])
            return await asyncio.wait_for(job, 30)

    assert asyncio.run(main()) == [Decimal("1.5"), Decimal("3.0")]


def test_sync_delay_and_push_work_in_either_order() -> None:
    built = eager.build()
    task = built.celery_app.tasks[built.add.name]
    assert task.delay(2, 3).get(timeout=10) == 5  # before the app is started anywhere

    async def work() -> Any:
        return await (await built.add.push(4, 5))

    assert _run(built, work) == 9
    assert task.delay(1, 1).get(timeout=10) == 2  # and after
    assert _run(built, work) == 9  # and on a new loop again
    enters = built.trail.count(("lifespan", "enter"))
    exits = built.trail.count(("lifespan", "exit"))
    assert enters - exits <= 1  # one lifetime at a time, never two lifespans open


def test_two_apps_with_the_same_route_names_run_their_own_jobs() -> None:
    first, second = eager.build(), eager.build()

    async def work(built: eager.EagerApp) -> Any:
        return await (await built.flaky.push("k", 0))

    _run(first, lambda: work(first))
    _run(second, lambda: work(second))
    assert first.attempts == {"k": 1}
    assert second.attempts == {"k": 1}


def test_an_eager_push_does_not_block_the_loop() -> None:
    built = eager.build()

    async def work() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        running = asyncio.ensure_future(ticker())
        job = await built.slow.push()
        running.cancel()
        assert job.status is JobStatus.TIMEOUT
        return ticks

    assert _run(built, work) >= 10  # the 0.2 s timeout passed while the loop ticked


def test_an_app_with_routers_starts_again_and_again_in_one_process() -> None:
    # Jobify 0.14 alone fails the second start of an app with routers (it
    # prefixes the routers' routes again); a test suite starts its app per test.
    from celery import Celery
    from jobify import Jobify, JobRouter

    from jobify_celery import JobifyCelery

    celery_app = Celery("restarts", broker="memory://", backend="cache+memory://")
    celery_app.conf.task_always_eager = True
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)
    orders = JobRouter(prefix="orders")
    refunds = JobRouter(prefix="refunds")

    @orders.task(name="place")
    async def place(n: int) -> int:
        return n + 1

    @refunds.task(name="back")
    async def back(n: int) -> int:
        return -n

    orders.include_router(refunds)
    app.include_router(orders)

    async def once(n: int) -> tuple[int, int]:
        async with app:
            return await (await place.push(n)), await (await back.push(n))

    for n in range(3):
        assert asyncio.run(once(n)) == (n + 1, -n)
    # (Other tests' shared Celery tasks are in every app: look at this app's routes.)
    names = {name for name in celery_app.tasks if "orders" in name}
    assert names == {"orders:place", "orders.refunds:back"}


def test_middleware_runs_once_per_job_however_often_the_app_started() -> None:
    # Jobify 0.14 puts the app's middleware in front of each router's own at
    # every startup, in place: by the third start, each ran three times a push.
    from celery import Celery
    from jobify import Jobify, JobRouter

    from jobify_celery import JobifyCelery

    calls: list[str] = []

    def counting(name: str) -> Any:
        async def middleware(call_next: Any, context: Any) -> Any:
            calls.append(name)
            return await call_next(context)

        return middleware

    celery_app = Celery("restarts-mw", broker="memory://", backend="cache+memory://")
    celery_app.conf.task_always_eager = True
    app = Jobify(
        storage=False, outer_middleware=[counting("app outer")], middleware=[counting("app inner")]
    )
    JobifyCelery(app, celery_app)
    orders = JobRouter(prefix="mw-orders")
    orders.add_outer_middleware(counting("router outer"))
    orders.add_middleware(counting("router inner"))
    refunds = JobRouter(prefix="mw-refunds")
    refunds.add_middleware(counting("sub-router inner"))

    @refunds.task(name="back")
    async def back(n: int) -> int:
        return -n

    orders.include_router(refunds)
    app.include_router(orders)

    async def once(n: int) -> int:
        async with app:
            return await (await back.push(n))

    for n in range(3):
        calls.clear()
        assert asyncio.run(once(n)) == -n
        assert sorted(calls) == sorted(
            ["app outer", "router outer", "app inner", "router inner", "sub-router inner"]
        ), (n, calls)
