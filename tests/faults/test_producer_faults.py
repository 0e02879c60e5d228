"""The producer's own edges: bad values, cancelled pushes, exits and outages end clearly."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from jobify import JobStatus

from jobify_celery import PublishError, ResultUnavailableError
from tests.faults.conftest import proxied_broker_url
from tests.helpers import queue_depth

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.apps.tally import Tally
    from tests.faults.proxy import TcpProxy
    from tests.faults.redis_server import PrivateRedis
    from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration


def test_a_value_too_deep_is_refused_naming_the_task(make_tally: Callable[..., Tally]) -> None:
    tally = make_tally()
    value: Any = "bottom"
    for _ in range(500):
        value = [value]

    async def scenario() -> None:
        async with tally.app:
            with pytest.raises(TypeError, match=r"argument 'value' of task 'tally.nested'"):
                await tally.nested.push(value)

    asyncio.run(scenario())
    assert queue_depth(tally.queue) == 0


def test_a_push_cancelled_after_publishing_leaves_a_job_that_ends(
    make_tally: Callable[..., Tally], start_tally_worker: Callable[..., WorkerProcess]
) -> None:
    """The outer middleware waits after publishing; the caller gives up meanwhile."""
    tally = make_tally()
    start_tally_worker(tally)
    ns = f"linger-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[set[str], int]:
        seen: set[str] = set()
        async with tally.app:
            for _ in range(20):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(tally.work.push(ns, 1.0), 0.3)
                seen.update(job.id for job in tally.app.get_active_jobs())
            deadline = time.monotonic() + 60
            while tally.app.get_active_jobs() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return seen, len(tally.app.get_active_jobs())

    findable, left = asyncio.run(scenario())
    assert len(findable) == 20  # each published job could be found ...
    assert left == 0  # ... and ended with its run: none stays behind
    assert tally.finished(ns) == dict.fromkeys(findable, 1)


def test_leaving_the_app_with_many_pending_jobs_is_quick_and_clear(
    make_tally: Callable[..., Tally],
) -> None:
    tally = make_tally()  # no worker: every job stays pending

    async def scenario() -> tuple[list[Any], float]:
        async with tally.app:
            jobs = await asyncio.gather(*(tally.work.push("p") for _ in range(1000)))
            started = time.monotonic()
        return list(jobs), time.monotonic() - started

    jobs, exit_took = asyncio.run(scenario())
    assert exit_took <= 1.0
    for job in jobs:
        assert job.is_done()
        assert job.status is JobStatus.SCHEDULED
        assert isinstance(job.exception, ResultUnavailableError)
        with pytest.raises(ResultUnavailableError, match="stopped following it"):
            job.result()


def test_a_backend_down_longer_than_the_bound_fails_the_waits_not_the_jobs(
    private_redis: PrivateRedis,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    tally = make_tally(result_backend=private_redis.url, backend_outage_timeout=2.0)
    start_tally_worker(tally)
    ns = uuid.uuid4().hex[:10]

    async def scenario() -> tuple[Any, float]:
        async with tally.app:
            warm = await tally.work.push(ns)
            await asyncio.wait_for(warm, 30)
            private_redis.kill()
            job = await tally.work.push(ns, 0.5)
            started = time.monotonic()
            with pytest.raises(ResultUnavailableError, match="unreachable"):
                await asyncio.wait_for(job, 30)
            return job, time.monotonic() - started

    job, gave_up_after = asyncio.run(scenario())
    assert gave_up_after < 10
    assert job.status is JobStatus.SCHEDULED
    private_redis.start()
    # The job itself ran; its result is stored once the backend is back.
    deadline = time.monotonic() + 60
    while job.id not in tally.finished(ns) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tally.finished(ns).get(job.id) == 1


@pytest.mark.parametrize("outage", ["broker stalls", "result backend dies"])
def test_leaving_the_app_during_an_outage_is_bounded(
    outage: str,
    broker_proxy: TcpProxy,
    private_redis: PrivateRedis,
    make_tally: Callable[..., Tally],
) -> None:
    tally = make_tally(
        broker_url=proxied_broker_url(broker_proxy),
        result_backend=private_redis.url,
        expiring_queue=False,
        publish_confirms=True,  # a push waiting on the stalled broker when the app stops
    )

    async def scenario() -> float:
        async with tally.app:
            jobs = [await tally.work.push("o") for _ in range(20)]  # followed, never run
            await asyncio.sleep(0.2)
            if outage == "broker stalls":
                broker_proxy.stall()
                in_flight = asyncio.ensure_future(tally.work.push("o"))
                await asyncio.sleep(0.2)
            else:
                private_redis.kill()
                in_flight = None
                await asyncio.sleep(0.5)
            started = time.monotonic()
        took = time.monotonic() - started
        if in_flight is not None:
            with pytest.raises(PublishError, match="shut down"):
                await in_flight
        assert all(isinstance(job.exception, ResultUnavailableError) for job in jobs)
        return took

    assert asyncio.run(scenario()) <= 1.5
