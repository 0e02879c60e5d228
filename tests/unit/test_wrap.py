"""Taking over existing Celery tasks: what is kept, what is refused. No server."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from celery import Celery
from jobify import Jobify, SmartRetry

from jobify_celery import AppBindingError, JobifyCelery
from jobify_celery._wrap import is_celery_task, route_function, unwrap


def apps(name: str) -> tuple[Jobify, Celery]:
    celery_app = Celery(name, broker="memory://localhost//")
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)
    return app, celery_app


def test_unwrap_keeps_name_function_binding_and_options() -> None:
    celery_app = Celery("w1", broker="memory://localhost//")

    @celery_app.task(bind=True, name="w1.bound", queue="q1", max_retries=7, rate_limit="1/s")
    def bound(self: Any, x: int) -> int:
        return x

    @celery_app.task(name="w1.plain")
    def plain(x: int) -> int:
        return x

    assert is_celery_task(bound)
    assert not is_celery_task(plain.run)
    wrapped = unwrap(bound)
    assert wrapped.name == "w1.bound"
    assert wrapped.bound is True
    assert wrapped.options["queue"] == "q1"
    assert wrapped.options["max_retries"] == 7
    assert wrapped.options["rate_limit"] == "1/s"
    assert "acks_late" in wrapped.options
    assert list(inspect.signature(route_function(wrapped)).parameters) == ["x"]
    assert unwrap(plain).bound is False
    assert list(inspect.signature(route_function(unwrap(plain))).parameters) == ["x"]


def test_pickle_tasks_are_refused() -> None:
    celery_app = Celery("w2", broker="memory://localhost//")

    @celery_app.task(name="w2.pickled", serializer="pickle")
    def pickled() -> None: ...

    with pytest.raises(ValueError, match="publishes JSON only"):
        unwrap(pickled)


def test_a_wrapped_task_keeps_its_celery_name_and_one_retry_policy() -> None:
    app, celery_app = apps("w3")

    @celery_app.task(name="w3.task", autoretry_for=(KeyError,))
    def task() -> None: ...

    with pytest.raises(AppBindingError, match="keeps its Celery name"):
        app.task(task, name="w3.other")
    with pytest.raises(AppBindingError, match="pick one"):
        app.task(task, retry=SmartRetry(retries=1))
    route = app.task(task)
    assert route.name == "w3.task"
    new = celery_app.tasks["w3.task"]
    assert new.jobify_route == "w3.task"
    assert new.autoretry_for == (KeyError,)


def test_a_native_route_named_like_a_registered_celery_task_is_refused_at_declaration() -> None:
    app, celery_app = apps("w4")

    @celery_app.task(name="w4.same", lazy=False)
    def existing() -> None: ...

    with pytest.raises(AppBindingError, match="clashes with a Celery task"):

        @app.task(name="w4.same")
        async def native() -> None: ...
