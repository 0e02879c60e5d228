"""What jobify_celery._jobify assumes of Jobify's private machinery.

If a Jobify release breaks one of these, this file says which, before any
integration test has to guess why. No server: an in-memory Celery broker.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from jobify import INJECT, Job, JobContext, Jobify, JobRouter, JobStatus, ScheduleBuilder
from packaging.version import Version

from jobify_celery import JobifyCelery
from jobify_celery._jobify import (
    RemoteJob,
    build_job_context,
    rebind_loop,
    route_by_name,
    running_job,
    tracker_of,
)
from jobify_celery._names import route_table

if TYPE_CHECKING:
    from pathlib import Path


def make_apps() -> tuple[Jobify, Celery]:
    celery_app = Celery("assumptions", broker="memory://", backend="cache+memory://")
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)
    return app, celery_app


def test_jobify_version_is_the_pinned_one() -> None:
    version = Version(importlib.metadata.version("jobify"))
    assert Version("0.14") <= version < Version("0.15")


def test_push_ends_in_a_publish_and_tracks_a_remote_job() -> None:
    app, _celery_app = make_apps()

    @app.task(name="a:add")
    async def add(a: int, b: int) -> int:
        return a + b

    published: list[dict[str, Any]] = []

    def spy(headers: dict[str, Any] | None = None, body: Any = None, **_: Any) -> None:
        published.append({"headers": headers, "body": body})

    signals.before_task_publish.connect(spy, weak=False)

    async def scenario() -> Job[int]:
        async with app:
            job = await add.push(1, 2)
            assert app.find_job(job.id) is job
            assert tracker_of(app).pending_jobs[job.id] is job
            return job

    try:
        job = asyncio.run(scenario())
    finally:
        signals.before_task_publish.disconnect(spy)
    assert isinstance(job, RemoteJob)
    assert isinstance(job, Job)
    assert job.status is JobStatus.SCHEDULED
    assert len(published) == 1
    headers = published[0]["headers"]
    assert headers["id"] == job.id
    assert headers["task"] == "a:add"
    assert json.loads(headers["jobify"])["v"] == 1
    args, kwargs, _embed = published[0]["body"]
    assert (args, kwargs) == ([1, 2], {})


def test_declared_crons_arm_no_local_timer() -> None:
    app, _ = make_apps()

    @app.task(name="a:tick", cron="* * * * * * *")
    async def tick() -> None:
        raise AssertionError

    async def scenario() -> list[Job[Any]]:
        async with app:
            await asyncio.sleep(1.2)
            return app.get_active_jobs()

    assert asyncio.run(scenario()) == []
    assert "__crons_definition__" not in app.state


def test_route_names_match_what_jobify_gives_at_startup() -> None:
    app, _ = make_apps()
    outer = JobRouter(prefix="outer")
    inner = JobRouter(prefix="inner")
    bare = JobRouter()
    deep = JobRouter(prefix="deep")

    @app.task
    async def root_job() -> None: ...

    @outer.task
    async def outer_job() -> None: ...

    @inner.task
    async def inner_job() -> None: ...

    @bare.task(name="bare_job")
    async def bare_job() -> None: ...

    @deep.task
    async def deep_job() -> None: ...

    bare.include_router(deep)
    outer.include_router(inner)
    app.include_routers(outer, bare)
    before = sorted(name for name, _ in route_table(app, started=False))

    async def scenario() -> tuple[list[str], list[str]]:
        async with app:
            after = sorted(name for name, _ in route_table(app, started=True))
            jobify_names = sorted(app.task._routes)
            assert all(route_by_name(app, n) is not None for n in after)
            return after, jobify_names

    after, jobify_names = asyncio.run(scenario())
    assert before == after == jobify_names
    assert any(n.startswith("outer.inner:tests.unit.") and n.endswith(".inner_job") for n in before)
    assert any(n.startswith(".deep:tests.unit.") and n.endswith(".deep_job") for n in before)
    assert "bare_job" in before


def test_a_job_context_can_be_built_from_a_route_builder() -> None:
    app, _ = make_apps()

    @app.task(name="a:ctx")
    async def needs_ctx(x: int, ctx: JobContext = INJECT) -> int:
        return x

    async def scenario() -> None:
        async with app:
            route = route_by_name(app, "a:ctx")
            assert route is not None
            builder = route.create_builder(route.func_spec.signature.bind(1))
            assert isinstance(builder, ScheduleBuilder)
            job: Job[Any] = Job(
                job_id="j",
                exec_at=builder.now(),
                storage=app.configs.storage,
                unregister_hook=lambda _: None,
            )
            from jobify import RequestState

            context = build_job_context(
                app=app, builder=builder, job=job, request_state=RequestState()
            )
            assert context.schedule_builder is builder
            assert context.state is app.state
            assert context.runnable.bound.arguments == {"x": 1}

    assert JobContext._fields == (
        "app",
        "job",
        "state",
        "runnable",
        "request_state",
        "route_options",
        "jobify_config",
        "schedule_builder",
    )
    asyncio.run(scenario())


def test_running_jobs_share_one_done_event_and_still_read_as_jobify_jobs() -> None:
    # running_job() puts its shared event in Job's private _event slot.
    done = asyncio.Event()
    done.set()
    jobs = [
        running_job(
            job_id=str(n),
            exec_at=datetime.now(UTC),
            storage=None,
            unregister_hook=lambda _: None,
            done=done,
        )
        for n in range(2)
    ]
    assert "_event" in Job.__slots__
    assert all(job._event is done for job in jobs)
    assert all(job.is_done() and job.status is JobStatus.RUNNING for job in jobs)
    jobs[0].set_result(1, status=JobStatus.SUCCESS)  # what the executor does at the end
    assert done.is_set()
    assert jobs[0].result() == 1
    asyncio.run(asyncio.wait_for(jobs[1].wait(), 1))


def test_the_remembered_loop_can_be_cleared_for_a_new_start() -> None:
    app = Jobify(storage=False)

    async def ask() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        return app.configs.getloop(), asyncio.get_running_loop()

    first, _ = asyncio.run(ask())
    remembered, current = asyncio.run(ask())
    assert remembered is first  # Jobify keeps the first loop: the stale one
    assert remembered is not current
    assert rebind_loop(app)
    remembered, current = asyncio.run(ask())
    assert remembered is current


def test_a_run_time_cron_is_stored_as_jobifys_own_scheduler_stores_it(tmp_path: Path) -> None:
    """The bridge writes a producer's cron itself (insert-if-absent): same record as Jobify's."""
    from jobify import Cron
    from jobify.storage import SQLiteStorage

    from jobify_celery._jobify import read_cron_record

    def build(path: Path, *, bridged: bool) -> Jobify:
        app = Jobify(storage=SQLiteStorage(path))
        if bridged:
            JobifyCelery(app, Celery("cron-record", broker="memory://", backend="cache+memory://"))

        @app.task(name="a:report")
        async def report(region: str, limit: int = 5) -> None:
            del region, limit

        return app

    async def add(app: Jobify) -> list[Any]:
        async with app:
            route = route_by_name(app, "a:report")
            assert route is not None
            await route.schedule("eu", limit=7).cron(Cron("0 0 * * * * *"), job_id="nightly")
            return list(await app.configs.storage.get_schedules())

    jobify_app = build(tmp_path / "jobify.db", bridged=False)
    bridged_app = build(tmp_path / "bridge.db", bridged=True)
    [theirs] = asyncio.run(add(jobify_app))
    [ours] = asyncio.run(add(bridged_app))
    assert (ours.job_id, ours.name, ours.status) == (theirs.job_id, theirs.name, theirs.status)
    mine, jobifys = read_cron_record(bridged_app, ours), read_cron_record(jobify_app, theirs)
    assert (mine.name, mine.arguments, mine.cron) == (jobifys.name, jobifys.arguments, jobifys.cron)
    assert mine.arguments == {"region": "eu", "limit": 7}
