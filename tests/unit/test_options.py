"""Route options: refused at declaration when they cannot work; mapped to Celery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from celery import Celery
from jobify import Cron, Jobify, JobRouter, SmartRetry

from jobify_celery import JobifyCelery
from jobify_celery._options import celery_task_options, publish_options_of, retry_policy


def bound_app(name: str) -> tuple[Jobify, Celery]:
    celery_app = Celery(name, broker="memory://localhost//")
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)
    return app, celery_app


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": SmartRetry(retries=-1)}, "retries=-1 is negative"),
        ({"retry": -2}, "retries=-2 is negative"),
        ({"retry": SmartRetry(retries=2, initial_delay=-0.5)}, "initial_delay=-0.5 is negative"),
        ({"retry": SmartRetry(retries=2, max_delay=-1)}, "max_delay=-1 is negative"),
        ({"retry": SmartRetry(retries=2, backoff_factor=0)}, "backoff_factor=0 is not positive"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": -3.0}, "timeout must be a positive number"),
        ({"metadata": {"celery": {"acks_lately": True}}}, "unknown option(s) ['acks_lately']"),
    ],
)
def test_bad_options_fail_at_declaration(options: dict[str, Any], message: str) -> None:
    app, _ = bound_app("o1")
    with pytest.raises(ValueError, match="route 'o1:job'") as caught:

        @app.task(name="o1:job", **options)
        async def job() -> None: ...

    assert message in str(caught.value)


def test_bad_retry_type_is_a_type_error() -> None:
    app, _ = bound_app("o2")
    with pytest.raises(TypeError, match="retry must be an int or a SmartRetry"):

        @app.task(name="o2:job", retry="3")  # type: ignore[call-overload]
        async def job() -> None: ...


def test_routes_declared_before_binding_are_checked_at_binding() -> None:
    app = Jobify(storage=False)

    @app.task(name="o3:job", timeout=0)
    async def job() -> None: ...

    with pytest.raises(ValueError, match="route 'o3:job': timeout"):
        JobifyCelery(app, Celery("o3", broker="memory://localhost//"))


def test_router_routes_are_checked_when_the_app_starts() -> None:
    app, _ = bound_app("o4")
    router = JobRouter(prefix="r")

    @router.task(name="o4:job", retry=SmartRetry(retries=-1))
    async def job() -> None: ...

    app.include_router(router)

    async def start() -> None:
        async with app:
            pass

    with pytest.raises(ValueError, match="route 'r:o4:job'"):
        asyncio.run(start())


def test_celery_task_and_publish_options() -> None:
    assert celery_task_options({}) == {"acks_late": True, "reject_on_worker_lost": True}
    assert celery_task_options({"timeout": 2})["time_limit"] == 3.0
    options = {"metadata": {"celery": {"acks_late": False, "queue": "fast", "priority": 5}}}
    assert celery_task_options(options)["acks_late"] is False
    assert "queue" not in celery_task_options(options)
    assert publish_options_of(options) == {"queue": "fast", "priority": 5}
    assert retry_policy({"retry": 2}) == SmartRetry(retries=2)
    assert retry_policy({}) is None


def test_tasks_acknowledge_late_unless_the_route_says_otherwise() -> None:
    app, celery_app = bound_app("o5")

    @app.task(name="o5:default")
    async def default() -> None: ...

    @app.task(name="o5:early", metadata={"celery": {"acks_late": False}})
    async def early() -> None: ...

    assert celery_app.tasks["o5:default"].acks_late is True
    assert celery_app.tasks["o5:default"].reject_on_worker_lost is True
    assert celery_app.tasks["o5:early"].acks_late is False


def test_an_invalid_cron_fails_at_declaration_and_at_cron() -> None:
    app, _ = bound_app("o6")
    with pytest.raises(ValueError, match="route 'o6:job': invalid cron expression 'every day'"):

        @app.task(name="o6:job", cron="every day")
        async def job() -> None: ...

    with pytest.raises(ValueError, match="cron's args/kwargs do not fit"):

        @app.task(name="o6:args", cron=Cron("* * * * *", args=(1, 2)))
        async def one(x: int) -> None: ...

    @app.task(name="o6:ok")
    async def ok() -> None: ...

    async def scenario() -> None:
        async with app:
            with pytest.raises(ValueError):
                await ok.schedule().cron("not a cron", job_id="x")

    asyncio.run(scenario())


def test_binding_points_celery_beat_at_the_jobify_scheduler() -> None:
    _, celery_app = bound_app("o7")
    assert celery_app.conf.beat_scheduler == "jobify_celery.beat:JobifyScheduler"
    chosen = Celery("o8", broker="memory://localhost//")
    chosen.conf.beat_scheduler = "redbeat.RedBeatScheduler"
    JobifyCelery(Jobify(storage=False), chosen)
    assert chosen.conf.beat_scheduler == "redbeat.RedBeatScheduler"
