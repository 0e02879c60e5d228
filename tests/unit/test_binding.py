"""Binding a Jobify app to a Celery app: the misuses get errors that say what to do."""

from __future__ import annotations

import asyncio

import pytest
from celery import Celery
from jobify import Jobify

from jobify_celery import AppBindingError, JobifyCelery


def test_binding_registers_every_route_as_a_celery_task_at_finalize() -> None:
    celery_app = Celery("b1", broker="memory://")
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)

    @app.task(name="b1:late")
    async def declared_after_binding(x: int) -> int:
        return x

    task = celery_app.tasks["b1:late"]
    assert task.jobify_route == "b1:late"
    assert task.serializer == "json"
    assert "pickle" not in celery_app.conf.accept_content
    with pytest.raises(TypeError):
        task.delay(1, 2)


def test_a_finalized_celery_app_is_refused() -> None:
    celery_app = Celery("b2", broker="memory://")
    celery_app.finalize()
    with pytest.raises(AppBindingError, match="already finalized"):
        JobifyCelery(Jobify(storage=False), celery_app)


def test_each_app_is_bound_once() -> None:
    app = Jobify(storage=False)
    JobifyCelery(app, Celery("b3", broker="memory://"))
    with pytest.raises(AppBindingError, match="already bound to a Celery app"):
        JobifyCelery(app, Celery("b4", broker="memory://"))
    celery_app = Celery("b5", broker="memory://")
    JobifyCelery(Jobify(storage=False), celery_app)
    with pytest.raises(AppBindingError, match="already bound to a Jobify app"):
        JobifyCelery(Jobify(storage=False), celery_app)


def test_wrong_types_and_started_apps_are_refused() -> None:
    with pytest.raises(TypeError, match="must be a Jobify app"):
        JobifyCelery(object(), Celery("b6"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a Celery app"):
        JobifyCelery(Jobify(storage=False), object())  # type: ignore[arg-type]

    async def scenario() -> None:
        app = Jobify(storage=False)
        async with app:
            with pytest.raises(AppBindingError, match="before starting"):
                JobifyCelery(app, Celery("b7", broker="memory://"))

    asyncio.run(scenario())


def test_a_route_name_clashing_with_a_celery_task_is_refused() -> None:
    celery_app = Celery("b8", broker="memory://")
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)

    @celery_app.task(name="b8:same")
    def plain() -> None: ...

    @app.task(name="b8:same")
    async def jobify_one() -> None: ...

    async def scenario() -> None:
        async with app:
            pass

    with pytest.raises(AppBindingError, match="clashes with a Celery task"):
        asyncio.run(scenario())
