"""``jobify_celery.testing`` on the real servers: in-process workers on every pool.

Each test starts a worker in this very process, as a user's test would, from
sync code (with the app on an ``AppThread``) and from inside ``async with
app:``; jobs pushed there run through the worker, and the worker stops fast.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from jobify_celery.testing import AppThread, InProcessWorker, eager

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.apps.tally import Tally

pytestmark = pytest.mark.integration

POOLS = ["solo", "threads", "asyncio"]
WAIT = 30.0


@pytest.mark.parametrize("pool", POOLS)
def test_a_worker_in_the_test_process_from_sync_code(
    pool: str, make_tally: Callable[..., Tally]
) -> None:
    tally = make_tally()
    ns = uuid.uuid4().hex[:10]
    collector = (gc.get_freeze_count(), gc.get_threshold())
    with AppThread(tally.app) as producer, InProcessWorker(tally.app, pool=pool) as worker:
        job = producer.run(tally.work.push(ns, 0.05))
        producer.run(asyncio.wait_for(job.wait(), WAIT))
        # The Celery side, as a plain client sees it.
        celery_task = tally.celery_app.tasks[tally.work.name]
        value = celery_task.delay(ns, 0.0).get(timeout=WAIT)
        stopping = time.monotonic()
    assert job.result() == job.id
    assert isinstance(value, str)
    assert worker.hostname.startswith("jobify-test-")
    assert time.monotonic() - stopping < 5  # not Celery's 10 s poll
    assert len(tally.finished(ns)) == 2
    # The asyncio pool tunes the collector of a worker process of its own only.
    assert (gc.get_freeze_count(), gc.get_threshold()) == collector


@pytest.mark.parametrize("pool", POOLS)
def test_a_worker_in_the_test_process_from_inside_the_app(
    pool: str, make_tally: Callable[..., Tally]
) -> None:
    tally = make_tally()
    ns = uuid.uuid4().hex[:10]

    async def scenario() -> list[Any]:
        async with tally.app, InProcessWorker(tally.app, pool=pool):
            jobs = [await tally.work.push(ns, 0.05) for _ in range(3)]
            return [await asyncio.wait_for(job, WAIT) for job in jobs]

    started = time.monotonic()
    results = asyncio.run(scenario())
    assert len(results) == 3
    assert len(tally.finished(ns)) == 3
    assert time.monotonic() - started < 20


def test_eager_runs_jobs_without_a_worker(make_tally: Callable[..., Tally]) -> None:
    tally = make_tally()
    ns = uuid.uuid4().hex[:10]

    async def scenario() -> Any:
        async with tally.app:
            with eager(tally.app):
                job = await tally.work.push(ns, 0.0)
                done_at_push = job.is_done()
            return done_at_push, await job

    done_at_push, result = asyncio.run(scenario())
    assert done_at_push
    assert isinstance(result, str)
    assert len(tally.finished(ns)) == 1
    assert not tally.celery_app.conf.task_always_eager  # restored


def test_a_prefork_in_process_worker_is_refused_with_the_reason(
    make_tally: Callable[..., Tally],
) -> None:
    with pytest.raises(ValueError, match="would fork the test process"):
        InProcessWorker(make_tally().app, pool="prefork")
