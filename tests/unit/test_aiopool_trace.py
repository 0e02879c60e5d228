"""Which jobs the asyncio pool traces on the loop, and the Celery internals that relies on."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery, Task
from celery._state import _task_stack
from celery.app import trace as celery_trace
from celery.utils.threads import _LocalStack

from jobify_celery._aiopool._trace import decoded_body, traced_on_loop


def _run(task: Task, *args: Any) -> Any:
    return args


@pytest.fixture
def celery_app() -> Celery:
    return Celery("trace-choice", set_as_current=False)


def _task(celery_app: Celery, name: str, **options: Any) -> Task:
    return celery_app.task(_run, name=name, bind=True, shared=False, **options)


def test_a_route_task_as_registered_is_traced_on_the_loop(celery_app: Celery) -> None:
    assert traced_on_loop(_task(celery_app, "plain"), _run)


def test_celerys_stack_protection_in_a_worker_is_not_a_custom_call(celery_app: Celery) -> None:
    # `celery worker` patches Task.__call__ for every task (setup_worker_optimizations).
    task = _task(celery_app, "protected")
    celery_trace._install_stack_protection()
    try:
        assert celery_trace.task_has_custom(task, "__call__")  # what Celery's check says
        assert traced_on_loop(task, _run)
    finally:
        celery_trace.reset_worker_optimizations(celery_app)


def test_a_wrapped_run_keeps_celerys_tracer(celery_app: Celery) -> None:
    # What an APM's Celery integration does (Sentry wraps task.run).
    task = _task(celery_app, "wrapped")
    original = task.run

    def traced_run(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    task.run = traced_run
    assert not traced_on_loop(task, _run)


def test_a_custom_call_keeps_celerys_tracer(celery_app: Celery) -> None:
    class Custom(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return super().__call__(*args, **kwargs)

    assert not traced_on_loop(_task(celery_app, "custom", base=Custom), _run)


def test_deduplicating_redelivered_successes_keeps_celerys_tracer(celery_app: Celery) -> None:
    celery_app.conf.worker_deduplicate_successful_tasks = True
    assert traced_on_loop(_task(celery_app, "early"), _run)  # acks early: no deduplication
    assert not traced_on_loop(_task(celery_app, "late", acks_late=True), _run)


def test_the_celery_internals_the_tracer_uses_are_there() -> None:
    # The asyncio pool's tracer follows celery.app.trace step by step: a
    # Celery release that renames these must fail here, not in a worker.
    for name in (
        "IGNORE_STATES",
        "LOG_SUCCESS",
        "TraceInfo",
        "_signal_internal_error",
        "get_task_name",
        "gethostname",
        "loads_message",
        "logger",
        "prepare_accept_content",
        "report_internal_error",
        "task_has_custom",
        "traceback_clear",
    ):
        assert hasattr(celery_trace, name), name
    for method in ("handle_error_state", "handle_reject", "handle_ignore"):
        assert callable(getattr(celery_trace.TraceInfo, method, None)), method
    assert isinstance(_task_stack, _LocalStack)
    assert hasattr(Celery("internals", set_as_current=False).amqp, "_retry_publish")


def test_the_decoded_body_comes_from_celerys_request() -> None:
    from celery.worker.request import Request

    class Owner:
        _payload = ([1], {"a": 2}, {"callbacks": None})

        def on_success(self, result: object) -> None:
            del result

    assert decoded_body(Owner().on_success) == ([1], {"a": 2}, {"callbacks": None})
    assert decoded_body(None) is None  # no request: the pool decodes the raw body
    # What it reads: Celery's Request keeps the payload it decoded, as its own
    # in-process Request.execute uses it.
    assert "_payload" in vars(Request)
