"""Existing Celery tasks as Jobify routes: the migration path.

``@app.task`` stacked on ``@celery_app.task(...)`` / ``@shared_task(...)``, or
``app.task(existing_task)``, turns a Celery task into a Jobify route that keeps
the task's Celery name and its options (queue, routing, retries, time limits,
acknowledgement), so old producers, ``send_task(name)`` and the messages
already queued keep working, now through Jobify's inner middleware.

The task's function runs where Celery ran it: on the pool thread executing the
task (``_pool_thread``), with ``self`` (for ``bind=True``) being the task that
executes, so ``self.request``, ``self.retry()``, thread-local resources and
Celery's time limits behave as before.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Final

from celery import Task

from jobify_celery._pool_thread import current_pool_thread

__all__ = ("KEPT_TASK_OPTIONS", "WrappedTask", "is_celery_task", "route_function", "unwrap")

#: Celery task options a wrapped task keeps (when set on it).
KEPT_TASK_OPTIONS: Final = (
    "queue",
    "routing_key",
    "exchange",
    "priority",
    "expires",
    "rate_limit",
    "time_limit",
    "soft_time_limit",
    "ignore_result",
    "store_errors_even_if_ignored",
    "track_started",
    "acks_late",
    "acks_on_failure_or_timeout",
    "reject_on_worker_lost",
    "max_retries",
    "default_retry_delay",
    "autoretry_for",
    "dont_autoretry_for",
    "retry_kwargs",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
)
_ALWAYS_KEPT: Final = frozenset({"acks_late", "reject_on_worker_lost"})
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class WrappedTask:
    """An existing Celery task taken over by a Jobify route."""

    name: str
    func: Any
    bound: bool
    options: dict[str, Any]


def is_celery_task(obj: object) -> bool:
    """Tell whether ``obj`` is a Celery task (a lazy task proxy resolves here)."""
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return False
    return isinstance(obj, Task)


def unwrap(obj: Any) -> WrappedTask:  # noqa: ANN401
    """Take a Celery task apart: its name, function and options."""
    task = obj._get_current_object() if hasattr(obj, "_get_current_object") else obj  # noqa: SLF001
    cls = type(task)
    run = inspect.getattr_static(cls, "run")
    if isinstance(run, staticmethod):
        func, bound = run.__func__, False
    elif inspect.isfunction(run):
        func, bound = run, True
    else:
        msg = f"cannot take over Celery task {task.name!r}: its run() is {run!r}"
        raise TypeError(msg)
    serializer = getattr(task, "serializer", None)
    if serializer not in (None, "json"):
        msg = (
            f"Celery task {task.name!r} uses the {serializer!r} serializer; jobify-celery "
            "publishes JSON only. Switch the task to JSON before wrapping it."
        )
        raise ValueError(msg)
    options = {}
    for option in KEPT_TASK_OPTIONS:
        value = getattr(task, option, _MISSING)
        default = getattr(Task, option, _MISSING)
        if value is not _MISSING and (option in _ALWAYS_KEPT or value != default):
            options[option] = value
    return WrappedTask(name=task.name, func=func, bound=bound, options=options)


def route_function(wrapped: WrappedTask) -> Any:  # noqa: ANN401
    """Build the function the Jobify route runs for a wrapped task.

    It has the task function's signature less ``self`` (so Jobify binds and
    loads the arguments as for any route) and runs the function on the Celery
    pool thread executing the job, passing that task as ``self`` when bound.
    """
    func = wrapped.func
    bound = wrapped.bound
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    if bound:
        params = params[1:]

    if inspect.iscoroutinefunction(func) and not bound:
        return func

    @functools.wraps(func)
    async def call_on_pool_thread(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        pool_thread = current_pool_thread()
        if pool_thread is None:
            msg = (
                f"wrapped Celery task {wrapped.name!r} runs only inside a Celery worker "
                "(it needs the worker's pool thread and task request)"
            )
            raise RuntimeError(msg)
        if bound:
            return await pool_thread.call(func, pool_thread.task, *args, **kwargs)
        return await pool_thread.call(func, *args, **kwargs)

    call_on_pool_thread.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return call_on_pool_thread
