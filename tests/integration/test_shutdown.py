"""Leaving the app and stopping a worker end within a bound, every time.

The producer side is started, used and left 200 times in a row against a real
worker; the worker side is stopped with SIGTERM right after a burst of jobs.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from jobify import JobStatus
from jobify.exceptions import JobFailedError

from jobify_celery import ResultUnavailableError
from tests.apps.tally import default as tally
from tests.integration.workers import WorkerProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.apps.tally import Tally
    from tests.conftest import LoopThread

pytestmark = pytest.mark.integration

CYCLES = 200
#: What "returns in at most 1 s" means here (the bound itself, no slack).
EXIT_BOUND = 1.0


@pytest.fixture(params=["prefork", "threads"])
def tally_worker(
    request: pytest.FixtureRequest, servers: None, tmp_path: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        app_path="tests.apps.tally:celery_app",
        celery_app=tally.celery_app,
        queues=[tally.queue],
        node=f"{tally.queue}-{request.param}-{uuid.uuid4().hex[:6]}@test",
        pool=request.param,
        concurrency=2 if request.param == "prefork" else 8,
        log_path=tmp_path / "worker.log",
    )
    process.wait_ready()
    yield process
    process.stop()


def test_leaving_the_app_right_after_results_is_bounded(
    tally_worker: WorkerProcess, loop_thread: LoopThread
) -> None:
    ns = uuid.uuid4().hex[:10]
    exits: list[float] = []

    async def cycle(index: int) -> None:
        async with tally.app:
            job: Any
            if index % 3 == 2:
                job = await tally.fail.push(ns)
            else:
                job = await tally.work.push(ns)
            await asyncio.wait_for(job.wait(), 30)
            if index % 3 == 2:
                assert job.status is JobStatus.FAILED
            else:
                assert job.result() == job.id
            # Leave at a different point of the watcher's work each time.
            for _ in range(index % 4):
                await asyncio.sleep(0)
            started = time.monotonic()
        exits.append(time.monotonic() - started)

    for index in range(CYCLES):
        loop_thread.run(cycle(index), timeout=60)
    assert len(exits) == CYCLES
    assert max(exits) <= EXIT_BOUND, sorted(exits)[-5:]


def test_jobs_pending_when_the_app_stops_raise_a_clear_error(
    tally_worker: WorkerProcess, loop_thread: LoopThread
) -> None:
    ns = uuid.uuid4().hex[:10]

    async def scenario() -> list[Any]:
        async with tally.app:
            jobs = [await tally.work.push(ns, 2.0) for _ in range(3)]
        return jobs  # noqa: RET504 - returned after the app is left

    jobs = loop_thread.run(scenario())
    for job in jobs:
        assert job.is_done()
        assert job.status is JobStatus.SCHEDULED
        with pytest.raises(ResultUnavailableError) as caught:
            job.result()
        assert job.id in str(caught.value)
        assert "AsyncResult" in str(caught.value)
        with pytest.raises(ResultUnavailableError):
            loop_thread.run(_awaited(job))
        assert not isinstance(caught.value, JobFailedError)
    assert tally.app.find_job(jobs[0].id) is None


async def _awaited(job: Any) -> Any:
    return await job


#: Plain Celery's own prefork shutdown, measured here at 2.6 s for -c 8 (billiard's
#: pool processes wait 1 s before they exit, its supervisor sleeps 0.8 s). The
#: whole worker's exit is only guarded against a hang; what the bridge adds is
#: what the test bounds.
CELERY_EXIT_GUARD = 10.0


@pytest.mark.parametrize("during", [False, True], ids=["after-the-jobs", "during-the-jobs"])
def test_a_prefork_worker_leaves_the_app_within_a_second_of_sigterm(
    during: bool,
    servers: None,
    loop_thread: LoopThread,
    tmp_path: Path,
) -> None:
    ns = uuid.uuid4().hex[:10]
    worker = WorkerProcess(
        app_path="tests.apps.tally:celery_app",
        celery_app=tally.celery_app,
        queues=[tally.queue],
        node=f"{tally.queue}-sigterm-{uuid.uuid4().hex[:6]}@test",
        pool="prefork",
        concurrency=8,
        log_path=tmp_path / "worker.log",
    )
    try:
        worker.wait_ready()

        async def push_all() -> list[Any]:
            # Long enough for each child to follow its job for a cancel.
            return [await tally.work.push(ns, 0.3) for _ in range(100)]

        loop_thread.run(tally.app.startup())
        try:
            loop_thread.run(push_all())
            deadline = time.monotonic() + 60
            wanted = 16 if during else 100
            while len(tally.finished(ns)) < wanted and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(tally.finished(ns)) >= wanted
        finally:
            loop_thread.run(tally.app.shutdown())
        sigterm = time.time()
        worker.process.send_signal(15)
        worker.process.wait(CELERY_EXIT_GUARD)
        last_end = max(tally.ends(ns))
        # Each of the 8 pool processes left the Jobify app (its lifespan
        # exit is the last step) within the bound after its last job.
        exits = tally.lifespan_exits(since=sigterm - 1)
        children = {pid: at for pid, at in exits.items() if pid not in (worker.pid, os.getpid())}
        assert len(children) == 8, (exits, worker.log()[-3000:])
        assert max(children.values()) - max(last_end, sigterm) <= EXIT_BOUND, (
            children,
            sigterm,
            last_end,
        )
        assert "did not stop within" not in worker.log()
    finally:
        worker.stop()


#: How long a worker sits idle before SIGTERM: Celery's hub then sleeps until
#: its next timer, up to 10 s away, unless a signal wakes it.
IDLE_BEFORE_SIGTERM = 1.5


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio"])
def test_an_idle_worker_acts_on_sigterm_at_once(
    pool: str,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    # Celery's SIGTERM handler only sets a flag that the consumer reads between
    # polls of its hub; without a wakeup an idle worker noticed 1-8 s late.
    own = make_tally()  # a queue of its own: nothing left by other tests to run
    worker = start_tally_worker(own, pool=pool, concurrency=2)
    time.sleep(IDLE_BEFORE_SIGTERM)
    sigterm = time.time()
    worker.process.send_signal(15)
    worker.process.wait(CELERY_EXIT_GUARD)
    # Where the app runs: the pool processes (prefork), the worker itself
    # (threads, asyncio). Each leaves it right after the consumer stops.
    exits = own.lifespan_exits(since=sigterm)
    assert len(exits) == (2 if pool == "prefork" else 1), (exits, worker.log()[-3000:])
    assert max(exits.values()) - sigterm <= EXIT_BOUND, (exits, sigterm, worker.log()[-3000:])


def test_pool_processes_forked_later_do_not_wake_the_parent(
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
    loop_thread: LoopThread,
) -> None:
    # With one job per child, every job after the first runs in a process
    # forked after the consumer started, which inherits the parent's signal
    # wakeup: each must have let go of it (its signals are its own).
    own = make_tally()
    worker = start_tally_worker(
        own, pool="prefork", concurrency=1, extra_args=["--max-tasks-per-child=1"]
    )
    wakeup_fd = own.extra["wakeup_fd"]

    async def ask(times: int) -> list[list[int]]:
        async with own.app:
            answers = []
            for _ in range(times):
                job = await wakeup_fd.push()
                await asyncio.wait_for(job.wait(), 30)
                answers.append(job.result())
            return answers

    answers = loop_thread.run(ask(3), timeout=100)
    assert len({pid for pid, _ in answers}) == 3, answers
    assert [fd for _, fd in answers] == [-1, -1, -1], (answers, worker.log()[-3000:])
