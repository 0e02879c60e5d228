"""Jobify's job lifecycle when the job runs on a Celery worker.

Runs once per worker kind (in-process threads, prefork, threads, asyncio pool).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from celery.result import AsyncResult
from jobify import JobStatus
from jobify.exceptions import DuplicateJobError, JobFailedError

from tests.apps import shop

if TYPE_CHECKING:
    from tests.conftest import LoopThread
    from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration

WAIT = 30.0


def _lateness(result: dict[str, Any]) -> float:
    started = datetime.fromisoformat(result["started"])
    planned = datetime.fromisoformat(result["exec_at"])
    return (started - planned).total_seconds()


def _label() -> str:
    return uuid.uuid4().hex[:10]


def test_delay_runs_at_its_planned_time(worker: Worker, loop_thread: LoopThread) -> None:
    label = _label()

    async def scenario() -> tuple[Any, dict[str, Any]]:
        job = await shop.stamp.schedule(label).delay(1.0)
        assert job.status is JobStatus.SCHEDULED
        return job, await asyncio.wait_for(job, WAIT)

    job, result = loop_thread.run(scenario())
    assert datetime.fromisoformat(result["exec_at"]) == job.exec_at
    lateness = _lateness(result)
    # Celery holds the message and starts it from its timer: a few ms late at
    # most on an idle worker; the bound only guards against "ran at once".
    assert 0 <= lateness < 0.5, lateness


def test_at_in_the_past_runs_now_and_naive_times_are_in_the_app_zone(
    worker: Worker, loop_thread: LoopThread
) -> None:
    label = _label()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], float]:
        started = time.monotonic()
        past = await shop.stamp.schedule(label).at(datetime.now(UTC) - timedelta(hours=1))
        past_result = await asyncio.wait_for(past, WAIT)
        elapsed = time.monotonic() - started
        naive_at = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=0.8)
        naive = await shop.stamp.schedule(label).at(naive_at)
        return past_result, await asyncio.wait_for(naive, WAIT), elapsed

    past_result, naive_result, elapsed = loop_thread.run(scenario())
    assert elapsed < 5
    assert _lateness(past_result) > 3000
    planned = datetime.fromisoformat(naive_result["exec_at"])
    assert planned.utcoffset() == timedelta(0)
    assert 0 <= _lateness(naive_result) < 0.5


def test_a_second_job_with_the_same_id_is_refused(worker: Worker, loop_thread: LoopThread) -> None:
    job_id = f"dup-{_label()}"

    async def scenario() -> None:
        first = await shop.stamp.schedule("dup").delay(30, job_id=job_id)
        with pytest.raises(DuplicateJobError):
            await shop.stamp.schedule("dup").delay(30, job_id=job_id)
        with pytest.raises(DuplicateJobError):
            await shop.stamp.schedule("dup").push(job_id=job_id)
        await first.cancel()

    loop_thread.run(scenario())


def test_replace_moves_a_pending_job_and_the_old_publish_never_runs(
    worker: Worker, loop_thread: LoopThread
) -> None:
    label = _label()
    job_id = f"replace-{label}"

    async def scenario() -> tuple[Any, Any, dict[str, Any]]:
        first = await shop.stamp.schedule(label).delay(1.0, job_id=job_id)
        moved = await shop.stamp.schedule(label).delay(2.5, job_id=job_id, replace=True)
        return first, moved, await asyncio.wait_for(moved, WAIT)

    first, moved, result = loop_thread.run(scenario())
    assert moved is first
    assert moved.id == job_id
    assert datetime.fromisoformat(result["exec_at"]) == moved.exec_at
    assert 0 <= _lateness(result) < 0.5
    time.sleep(1.0)
    assert shop.recorded(f"stamp:{label}") == [job_id]
    assert AsyncResult(job_id, app=shop.celery_app).state == "SUCCESS"


def test_cancel_before_the_run_means_it_never_runs(worker: Worker, loop_thread: LoopThread) -> None:
    label = _label()

    async def scenario() -> Any:
        job = await shop.stamp.schedule(label).delay(1.0)
        await job.cancel()
        return job

    job = loop_thread.run(scenario())
    assert job.status is JobStatus.CANCELLED
    assert shop.app.find_job(job.id) is None
    assert AsyncResult(job.id, app=shop.celery_app).state == "REVOKED"
    time.sleep(2.0)
    assert shop.recorded(f"stamp:{label}") == []
    assert AsyncResult(job.id, app=shop.celery_app).state == "REVOKED"


def test_cancel_while_an_async_function_runs_cancels_it_cooperatively(
    worker: Worker, loop_thread: LoopThread
) -> None:
    key = f"long-{_label()}"

    async def scenario() -> Any:
        job = await shop.long_async.push(key, 30.0)
        for _ in range(300):
            if shop.recorded(key):
                break
            await asyncio.sleep(0.05)
        await job.cancel()
        return job

    job = loop_thread.run(scenario())
    assert job.status is JobStatus.CANCELLED
    deadline = time.monotonic() + 10
    while "finally" not in shop.recorded(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    records = shop.recorded(key)
    assert records[0].startswith("start:")
    assert records[1:] == ["finally"]
    time.sleep(0.5)
    assert AsyncResult(job.id, app=shop.celery_app).state == "REVOKED"


def test_cancelling_a_finished_job_changes_nothing(worker: Worker, loop_thread: LoopThread) -> None:
    async def scenario() -> Any:
        job = await shop.add.push(2, 2)
        assert await asyncio.wait_for(job, WAIT) == 4
        await job.cancel()
        return job

    job = loop_thread.run(scenario())
    assert job.status is JobStatus.SUCCESS
    assert job.result() == 4
    assert AsyncResult(job.id, app=shop.celery_app).state == "SUCCESS"


def _attempts(key: str) -> list[tuple[int, float]]:
    rows = [r.split(":") for r in shop.recorded(key)]
    return [(int(a), float(t)) for a, t, _ in rows]


def test_retries_are_republished_with_smartretry_delays(
    worker: Worker, loop_thread: LoopThread
) -> None:
    key = f"flaky-{_label()}"

    async def scenario() -> tuple[Any, str]:
        job = await shop.flaky.push(key, 2)
        return job, await asyncio.wait_for(job, WAIT)

    job, result = loop_thread.run(scenario())
    assert result == "ok after 3"
    attempts = _attempts(key)
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
    # SmartRetry(initial_delay=0.3, backoff_factor=2, jitter=False): 0.3 s, then 0.6 s.
    assert 0.3 <= gaps[0] < 1.3, gaps
    assert 0.6 <= gaps[1] < 1.6, gaps
    # Each attempt was its own Celery execution, through the broker (the
    # last postrun may land just after the result).
    deadline = time.monotonic() + 5
    while len(shop.recorded(f"signals:{job.id}")) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shop.recorded(f"signals:{job.id}") == ["prerun", "postrun"] * 3


def test_the_last_failed_attempt_fails_the_job(worker: Worker, loop_thread: LoopThread) -> None:
    key = f"flaky-{_label()}"

    async def scenario() -> Any:
        job = await shop.flaky.push(key, 10)
        await asyncio.wait_for(job.wait(), WAIT)
        return job

    job = loop_thread.run(scenario())
    assert job.status is JobStatus.FAILED
    assert type(job.exception) is shop.Flaky
    assert str(job.exception) == "attempt 4 failed"
    with pytest.raises(JobFailedError):
        job.result()
    assert [a for a, _ in _attempts(key)] == [1, 2, 3, 4]


def test_excluded_exceptions_are_not_retried(worker: Worker, loop_thread: LoopThread) -> None:
    key = f"flaky-{_label()}"

    async def scenario() -> Any:
        job = await shop.flaky_excluded.push(key, 5)
        await asyncio.wait_for(job.wait(), WAIT)
        return job

    job = loop_thread.run(scenario())
    assert job.status is JobStatus.FAILED
    assert [a for a, _ in _attempts(key)] == [1]
