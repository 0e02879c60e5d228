"""What the asyncio pool adds, and what it must keep of Celery, on real `celery worker`s.

The suite's shared tests also run on this pool (the ``asyncio`` worker kind of
``conftest.worker``, the fault tests, the migration tests); these are the ones
only a many-jobs-in-one-loop pool raises: how many run at once, on how many
threads, what Celery's monitoring sees, time limits and shutdown that end
one job and not the process, and a job that holds the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery.result import AsyncResult
from jobify import JobStatus

from jobify_celery._aiopool._gc import GEN0_THRESHOLD
from tests.apps import tally as tally_module
from tests.helpers import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.apps.tally import Tally
    from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 30.0


@pytest.fixture
def pooled(
    make_tally: Callable[..., Tally], start_tally_worker: Callable[..., WorkerProcess]
) -> Callable[..., tuple[Tally, WorkerProcess]]:
    """A tally app and an asyncio-pool worker for it, with build options of the test's."""

    def make(concurrency: int = 50, **options: Any) -> tuple[Tally, WorkerProcess]:
        tally = make_tally(**options)
        worker = start_tally_worker(tally, pool="asyncio", concurrency=concurrency, **options)
        return tally, worker

    return make


def _in_app(tally: Tally, work: Any) -> Any:
    async def run() -> Any:
        async with tally.app:
            return await work()

    return asyncio.run(run())


def _threads(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())


def test_c_jobs_run_at_once_on_one_loop_without_a_thread_each(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
) -> None:
    tally, worker = pooled(concurrency=100)
    idle_threads = _threads(worker.pid)
    ns = uuid.uuid4().hex[:10]
    busiest: list[int] = []

    async def scenario() -> float:
        # From before the first push: the worker starts jobs while the rest are pushed.
        started = time.monotonic()
        jobs = [await tally.work.push(ns, 1.0) for _ in range(250)]
        watch = asyncio.ensure_future(_sample_threads(worker.pid, busiest))
        await asyncio.wait_for(asyncio.gather(*jobs), WAIT)
        watch.cancel()
        return time.monotonic() - started

    took = _in_app(tally, scenario)
    # 250 jobs of 1 s, 100 at a time: three waves, not 250 seconds nor one.
    assert 2.9 <= took < 8.0, took
    assert len(tally.finished(ns)) == 250
    # A handful of threads whatever the number of jobs in flight.
    assert max(busiest) <= idle_threads + 4, (idle_threads, max(busiest))


async def _sample_threads(pid: int, into: list[int]) -> None:
    while True:
        into.append(_threads(pid))
        await asyncio.sleep(0.1)


def test_celery_sees_jobs_in_flight_and_fires_every_signal(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
) -> None:
    tally, worker = pooled()
    ns = uuid.uuid4().hex[:10]
    inspect = tally.celery_app.control.inspect([worker.node], timeout=5)

    async def scenario() -> tuple[list[str], Any, Any]:
        running = [await tally.work.push(ns, 3.0) for _ in range(5)]
        wait_until(lambda: len(tally.runs(ns)) == 5, WAIT, "five jobs running")
        active = await asyncio.to_thread(inspect.active)
        ids = [entry["id"] for entry in (active or {}).get(worker.node, [])]
        await asyncio.wait_for(asyncio.gather(*running), WAIT)
        failed = await tally.fail.push(ns)
        await asyncio.wait_for(failed.wait(), WAIT)
        retried = await tally.price.push(ns, 1, tally_module.Shade.LIGHT)
        await asyncio.wait_for(retried, WAIT)
        return [*ids, *(job.id for job in running)], failed, retried

    ids, failed, retried = _in_app(tally, scenario)
    assert sorted(ids[:5]) == sorted(ids[5:])  # inspect active listed the five in flight
    assert failed.status is JobStatus.FAILED
    wait_until(lambda: failed.id in tally.runs("signal:failure"), WAIT, "task_failure")
    # Celery stores a result before it sends task_success: the producer may
    # have the result before the signal's handler has run.
    succeeded = [*ids[5:], retried.id]
    wait_until(
        lambda: all(job_id in tally.runs("signal:success") for job_id in succeeded),
        WAIT,
        "task_success for every job",
    )
    assert all(job_id in tally.runs("attempts") for job_id in ids[5:])  # task_prerun


def test_jobs_in_flight_hold_no_greenlet_and_each_sees_its_own_celery_request(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
) -> None:
    # A job traced on the loop waits in its asyncio task alone: no greenlet
    # is kept for it (Celery's tracer in a greenlet kept one per job in
    # flight). Celery's stacks (current_task, task.request) must still be
    # each job's own while 40 of them wait side by side.
    tally, _ = pooled()
    whose_request = tally.extra["whose_request"]

    async def scenario() -> list[Any]:
        jobs = [await whose_request.push(2.0) for _ in range(40)]
        return list(await asyncio.wait_for(asyncio.gather(*jobs), WAIT))

    seen = _in_app(tally, scenario)
    assert len({each["id"] for each in seen}) == 40
    for each in seen:
        assert each["before"] == [each["id"], each["id"]]
        assert each["after"] == [each["id"], each["id"]]
    # Counted a second into the jobs, when all 40 sleep: the loop thread's
    # and the consumer's own greenlets, no job's.
    assert max(each["greenlets"] for each in seen) <= 3, [each["greenlets"] for each in seen]


def test_the_collector_is_tuned_once_the_app_started_unless_told_not_to(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
) -> None:
    def collector_of(tally: Tally) -> list[int]:
        async def ask() -> list[int]:
            return list(await asyncio.wait_for(await tally.extra["collector"].push(), WAIT))

        return list(_in_app(tally, ask))

    tuned, _ = pooled()
    frozen, young, *_ = collector_of(tuned)
    assert frozen > 10_000  # the modules, the apps: the start-up heap
    assert young == GEN0_THRESHOLD
    untouched, _ = pooled(tune_gc=False)
    assert collector_of(untouched) == [0, *gc.get_threshold()]  # Python's defaults, as here


def test_time_limits_end_only_the_job_concerned(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
) -> None:
    tally, worker = pooled()
    ns = uuid.uuid4().hex[:10]
    soft, hard = tally.extra["soft_limited"], tally.extra["hard_limited"]

    async def scenario() -> tuple[Any, Any, list[Any]]:
        soft_job = await soft.push(ns, 5.0)
        hard_job = await hard.push(ns, 5.0)
        others = [await tally.work.push(ns, 2.0) for _ in range(10)]
        await asyncio.wait_for(asyncio.gather(*others), WAIT)
        await asyncio.wait_for(asyncio.gather(soft_job.wait(), hard_job.wait()), WAIT)
        return soft_job, hard_job, others

    soft_job, hard_job, others = _in_app(tally, scenario)
    assert all(job.status is JobStatus.SUCCESS for job in others)
    assert soft_job.status is JobStatus.FAILED
    assert type(soft_job.exception).__name__ == "SoftTimeLimitExceeded"
    assert hard_job.status is JobStatus.TIMEOUT
    assert type(hard_job.exception).__name__ == "TimeLimitExceeded"
    finished = tally.runs(ns)
    for job in (soft_job, hard_job):
        # Ended by asyncio cancellation: its finally ran, its end never came.
        assert finished.get(job.id) == 1
        assert job.id in tally._read(ns, "finally")
        assert job.id not in tally.finished(ns)
    assert AsyncResult(hard_job.id, app=tally.celery_app).state == "FAILURE"
    assert worker.process.poll() is None  # the process lives on


def test_a_job_that_holds_the_loop_is_named_and_the_rest_go_on(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
) -> None:
    tally, worker = pooled(blocked_loop_warning=0.3)
    ns = uuid.uuid4().hex[:10]

    async def scenario() -> tuple[Any, list[Any]]:
        held = await tally.extra["blocker"].push(ns, 1.5)
        others = [await tally.work.push(ns, 0.1) for _ in range(20)]
        await asyncio.wait_for(asyncio.gather(held, *others), WAIT)
        return held, others

    held, others = _in_app(tally, scenario)
    assert all(job.status is JobStatus.SUCCESS for job in others)
    log = worker.log()
    assert f"by job tally.blocker[{held.id}]" in log
    assert "in blocker" in log  # where it is held: the job's own line
    assert "The event loop was blocked for" in log


def test_rate_limits_are_celerys(pooled: Callable[..., tuple[Tally, WorkerProcess]]) -> None:
    tally, _ = pooled()
    ns = uuid.uuid4().hex[:10]
    rated = tally.extra["rated"]

    async def scenario() -> list[float]:
        jobs = [await rated.push(ns) for _ in range(30)]
        return list(await asyncio.wait_for(asyncio.gather(*jobs), WAIT))

    stamps = sorted(_in_app(tally, scenario))
    # Ten a second: 30 jobs spread over about three seconds, not all at once.
    assert stamps[-1] - stamps[0] >= 2.0


def test_warm_shutdown_lets_jobs_finish_within_the_grace_then_sends_the_rest_back(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    tally, worker = pooled(shutdown_grace=1.0)
    ns = uuid.uuid4().hex[:10]

    async def push() -> tuple[list[Any], list[Any]]:
        quick = [await tally.work.push(ns, 0.5) for _ in range(5)]
        slow = [await tally.work.push(ns, 10.0) for _ in range(5)]
        return quick, slow

    quick, slow = _in_app(tally, push)
    wait_until(lambda: len(tally.runs(ns)) == 10, WAIT, "ten jobs running")
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(30)
    finished = tally.finished(ns)
    assert all(job.id in finished for job in quick)  # finished within the grace
    assert not any(job.id in finished for job in slow)  # ended at the grace's end
    assert "go back to the queue" in worker.log()
    # Their messages went back: another worker runs them to their end.
    start_tally_worker(tally, pool="asyncio", concurrency=50)
    wait_until(lambda: all(job.id in tally.finished(ns) for job in slow), WAIT, "the rest ran")
    assert all(tally.runs(ns)[job.id] == 2 for job in slow)


def test_revoke_with_terminate_ends_one_running_job_for_good(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
) -> None:
    tally, _worker = pooled()
    ns = uuid.uuid4().hex[:10]

    async def scenario() -> tuple[Any, Any, Any]:
        doomed = await tally.work.push(ns, 4.0)
        other = await tally.work.push(ns, 0.2)
        await asyncio.to_thread(wait_until, lambda: doomed.id in tally.runs(ns), WAIT, "running")
        await doomed.cancel(terminate=True)
        await asyncio.wait_for(other, WAIT)
        return doomed, other, AsyncResult(doomed.id, app=tally.celery_app).state

    started = time.monotonic()
    doomed, other, state = _in_app(tally, scenario)
    assert doomed.status is JobStatus.CANCELLED
    assert state == "REVOKED"
    assert other.id in tally.finished(ns)
    time.sleep(max(0.0, started + 6.0 - time.monotonic()))  # past the doomed job's 4 s
    assert doomed.id not in tally.finished(ns)  # it stopped where it was
    assert tally.runs(ns)[doomed.id] == 1  # acknowledged: never delivered again


def test_cold_shutdown_ends_jobs_at_once_and_sends_them_back(
    pooled: Callable[..., tuple[Tally, WorkerProcess]],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    tally, worker = pooled(shutdown_grace=60.0)
    ns = uuid.uuid4().hex[:10]
    slow = _in_app(tally, lambda: asyncio.gather(*(tally.work.push(ns, 30.0) for _ in range(5))))
    wait_until(lambda: len(tally.runs(ns)) == 5, WAIT, "five jobs running")
    started = time.monotonic()
    worker.process.send_signal(signal.SIGQUIT)
    worker.process.wait(30)
    assert time.monotonic() - started < 15  # not the 60 s grace, nor the jobs' 30 s
    assert not tally.finished(ns)
    start_tally_worker(tally, pool="asyncio", concurrency=50)
    wait_until(lambda: all(tally.runs(ns).get(job.id) == 2 for job in slow), WAIT, "sent back")


def test_worker_events_and_retry_and_revoke_signals(
    make_tally: Callable[..., Tally], start_tally_worker: Callable[..., WorkerProcess]
) -> None:
    tally = make_tally()
    start_tally_worker(tally, pool="asyncio", concurrency=20, extra_args=["-E"])
    ns = uuid.uuid4().hex[:10]
    events: list[tuple[str, str]] = []
    stop = threading.Event()
    capture = threading.Thread(target=_capture_events, args=(tally, events, stop), daemon=True)
    capture.start()
    try:
        _until_receiving(tally, events)
        _events_and_signals(tally, ns, events)
    finally:
        stop.set()
        capture.join(5)


def _events_and_signals(tally: Tally, ns: str, events: list[tuple[str, str]]) -> None:

    async def scenario() -> tuple[Any, Any, Any]:
        done = await tally.work.push(ns)
        retried = await tally.extra["flaky"].push(ns, 1)
        revoked = await tally.work.schedule(ns).delay(1.5)
        await asyncio.wait_for(asyncio.gather(done, retried), WAIT)
        await revoked.cancel()
        return done, retried, revoked

    done, retried, revoked = _in_app(tally, scenario)
    assert retried.result() == 2
    wait_until(lambda: retried.id in tally.runs("signal:retry"), WAIT, "task_retry")
    wait_until(
        lambda: {("task-started", done.id), ("task-succeeded", done.id)} <= set(events),
        WAIT,
        "worker events",
    )
    assert ("task-retried", retried.id) in events
    assert revoked.status is JobStatus.CANCELLED
    # The worker held it for its ETA and skips it when due, as Celery does.
    wait_until(lambda: revoked.id in tally.runs("signal:revoked"), WAIT, "task_revoked")
    assert revoked.id not in tally.runs(ns)


def _until_receiving(tally: Tally, events: list[tuple[str, str]]) -> None:
    """Send probe events until the receiver gets one: its queue is bound from then on."""
    probe = uuid.uuid4().hex
    app = tally.celery_app
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, enabled=True)
        deadline = time.monotonic() + WAIT
        while ("task-probe", probe) not in events:
            assert time.monotonic() < deadline, "the event receiver never got a probe"
            dispatcher.send("task-probe", uuid=probe)
            time.sleep(0.2)
        dispatcher.close()


def _capture_events(tally: Tally, into: list[tuple[str, str]], stop: threading.Event) -> None:
    app = tally.celery_app
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection,
            handlers={"*": lambda event: into.append((event["type"], event.get("uuid", "")))},
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                receiver.capture(limit=None, timeout=0.5, wakeup=False)
