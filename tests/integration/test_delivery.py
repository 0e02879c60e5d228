"""Delivery guarantees on a real prefork `celery worker`.

Each test starts its own worker on the lifecycle queue (the routes used here
publish there) and does something rude to it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from celery.result import AsyncResult
from jobify import JobStatus

from tests.apps import shop
from tests.integration.workers import WorkerProcess

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import LoopThread

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(shop_app: Any, tmp_path: Path) -> Iterator[StartWorker]:
    """Start prefork workers on the lifecycle queue; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(concurrency: int = 2) -> WorkerProcess:
        index = len(started)
        process = WorkerProcess(
            app_path="tests.apps.shop:celery_app",
            celery_app=shop.celery_app,
            queues=[shop.LIFECYCLE_QUEUE],
            node=f"{shop.LIFECYCLE_QUEUE}-delivery{index}-{uuid.uuid4().hex[:6]}@test",
            pool="prefork",
            concurrency=concurrency,
            log_path=tmp_path / f"worker{index}.log",
        )
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


def _wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            msg = "condition not met in time"
            raise AssertionError(msg)
        time.sleep(0.05)


def _starts(key: str) -> list[int]:
    return [int(r.split(":")[1]) for r in shop.recorded(key) if r.startswith("start:")]


def test_a_child_killed_mid_task_has_its_job_delivered_again(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    worker = start_worker()
    key = f"sigkill-{uuid.uuid4().hex[:8]}"
    job = loop_thread.run(shop.long_async_elsewhere.push(key, 2.0))
    _wait_for(lambda: len(_starts(key)) == 1)
    first_pid = _starts(key)[0]
    assert first_pid != worker.pid
    os.kill(first_pid, signal.SIGKILL)
    result = loop_thread.run(asyncio.wait_for(job, 60), timeout=70)
    assert result == "finished"
    assert job.status is JobStatus.SUCCESS
    pids = _starts(key)
    assert len(pids) == 2
    assert pids[1] != first_pid
    assert shop.recorded(key)[-2:] == ["end", "finally"]


def _kill_the_worker_while_a_retry_waits(
    start_worker: StartWorker, loop_thread: LoopThread, key: str
) -> Any:
    """Push a job whose attempt 1 fails; kill its worker while the retry's countdown runs."""
    first = start_worker()
    job = loop_thread.run(shop.flaky_elsewhere.push(key, 1))
    _wait_for(lambda: len(shop.recorded(key)) == 1)
    _wait_for(lambda: AsyncResult(job.id, app=shop.celery_app).state == "RETRY")
    # RETRY is stored before the worker acknowledges attempt 1's message
    # (acks_late): a kill inside that window makes the broker redeliver it,
    # and attempt 1 rightly runs again. Give the ack a moment (the retry's
    # countdown is 3 s, so it is still held, not yet running).
    time.sleep(1.0)
    # The retry is published and held, unacknowledged, by this worker: kill
    # the whole worker, children included.
    os.killpg(first.pid, signal.SIGKILL)
    first.process.wait(10)
    return job


def test_a_worker_killed_between_attempts_loses_no_retry(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    key = f"retry-kill-{uuid.uuid4().hex[:8]}"
    job = _kill_the_worker_while_a_retry_waits(start_worker, loop_thread, key)
    start_worker()
    result = loop_thread.run(asyncio.wait_for(job, 60), timeout=70)
    assert result == "ok after 2"
    assert [int(r.split(":")[0]) for r in shop.recorded(key)] == [1, 2]


def test_a_stuck_sync_function_hits_the_celery_time_limit(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    start_worker()
    key = f"stuck-{uuid.uuid4().hex[:8]}"

    async def scenario() -> Any:
        job = await shop.stuck_sync_elsewhere.push(key)
        await asyncio.wait_for(job.wait(), 30)
        return job

    started = time.monotonic()
    job = loop_thread.run(scenario(), timeout=40)
    # timeout=1.0 plus one second of grace: the pool process was killed.
    assert time.monotonic() - started < 10
    assert job.status is JobStatus.TIMEOUT
    assert type(job.exception).__name__ == "TimeLimitExceeded"
    # The slot is free again: the worker runs the next job.
    follow_up = f"after-{key}"
    assert (
        loop_thread.run(asyncio.wait_for(_push_and_await(follow_up), 30), timeout=40) == "finished"
    )


async def _push_and_await(key: str) -> Any:
    job = await shop.long_async_elsewhere.push(key, 0.1)
    return await job


def test_a_soft_time_limit_interrupts_the_job_and_the_process_runs_the_next(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    # One pool process, so the follow-up runs where the limit struck: its
    # event loop, interrupted mid-iteration by Celery's signal, must work on.
    start_worker(concurrency=1)
    key = f"soft-{uuid.uuid4().hex[:8]}"

    async def limited() -> Any:
        job = await shop.soft_limited_elsewhere.push(key, 30.0)
        await asyncio.wait_for(job.wait(), 30)
        return job

    job = loop_thread.run(limited(), timeout=40)
    assert job.status is JobStatus.FAILED
    assert type(job.exception).__name__ == "SoftTimeLimitExceeded"
    pid, start, *rest = shop.recorded(key)
    # Cancelled where it waited: its finally ran, the rest did not.
    assert (start, rest) == (f"start:{pid.split(':')[1]}", ["finally"])

    follow_up = f"{key}-next"

    async def next_job() -> Any:
        job = await shop.soft_limited_elsewhere.push(follow_up, 0.1)
        return await asyncio.wait_for(job, 30)

    assert loop_thread.run(next_job(), timeout=40) == "finished"
    assert shop.recorded(follow_up)[0] == pid


def test_cancel_with_terminate_stops_a_running_sync_function(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    start_worker()
    key = f"terminate-{uuid.uuid4().hex[:8]}"
    job = loop_thread.run(shop.long_sync_elsewhere.push(key, 30.0))
    _wait_for(lambda: len(_starts(key)) == 1)
    pid = _starts(key)[0]
    loop_thread.run(job.cancel(terminate=True))
    assert job.status is JobStatus.CANCELLED

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    _wait_for(gone, timeout=15)
    assert "end" not in shop.recorded(key)
    assert AsyncResult(job.id, app=shop.celery_app).state == "REVOKED"


def test_warm_shutdown_finishes_running_jobs_then_leaves_the_lifespan(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    worker = start_worker()
    key = f"warm-{uuid.uuid4().hex[:8]}"
    job = loop_thread.run(shop.long_async_elsewhere.push(key, 2.0))
    _wait_for(lambda: len(_starts(key)) == 1)
    child = _starts(key)[0]
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0, worker.log()
    assert loop_thread.run(asyncio.wait_for(job, 30), timeout=40) == "finished"
    assert shop.recorded(key)[1:] == ["end", "finally"]
    lifespan = shop.recorded("lifespan")
    assert f"exit:{child}" in lifespan


def test_a_cancel_holds_for_a_worker_that_never_heard_the_revoke(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    """No worker runs when the job is cancelled; the one started later skips it at its ETA."""
    key = f"cancel-later-{uuid.uuid4().hex[:8]}"

    async def schedule_and_cancel() -> Any:
        job = await shop.long_async_elsewhere.schedule(key, 0.1).delay(2.0)
        await job.cancel()
        return job

    job = loop_thread.run(schedule_and_cancel())
    assert job.status is JobStatus.CANCELLED
    start_worker()  # Celery's broadcast revoke went out before it existed
    time.sleep(4.0)  # past the ETA
    assert shop.recorded(key) == []
    assert AsyncResult(job.id, app=shop.celery_app).state == "REVOKED"

    # The id of the cancelled job can serve a new job, which runs. (Its
    # producer reads the cancelled job's REVOKED state, still stored under
    # the id, so the run is observed through the side channel.)
    loop_thread.run(shop.long_async_elsewhere.schedule(key, 0.1).delay(0.5, job_id=job.id))
    _wait_for(lambda: "finally" in shop.recorded(key))
    assert len(_starts(key)) == 1


def test_a_job_cancelled_between_attempts_is_not_retried_by_a_new_worker(
    start_worker: StartWorker, loop_thread: LoopThread
) -> None:
    key = f"retry-cancel-{uuid.uuid4().hex[:8]}"
    job = _kill_the_worker_while_a_retry_waits(start_worker, loop_thread, key)
    loop_thread.run(job.cancel())  # no worker alive hears this revoke
    assert job.status is JobStatus.CANCELLED
    start_worker()  # gets the retry back from the broker
    time.sleep(5.0)  # past the retry's countdown
    assert [int(r.split(":")[0]) for r in shop.recorded(key)] == [1]
    assert AsyncResult(job.id, app=shop.celery_app).state == "REVOKED"
