"""Run synchronous Celery code as a coroutine, in a greenlet that waits on the loop.

Celery's code is synchronous: its tracer (``celery.app.trace``), the
result store, a publish. Run inside a greenlet driven by an asyncio task,
such code can still wait on the loop: it calls :func:`await_only`, which
hands the awaitable to the driving task and suspends the greenlet until it
is done, while the loop runs other jobs.

The asyncio pool runs this way the stretches of its own tracer that may
wait (``_trace``: storing a state, publishing a callback), each in a
greenlet that ends with it; and, for a task ``_trace`` cannot stand in
for, Celery's whole tracer, in a greenlet that lives as long as the job.

The greenlet and its driving task share one ``contextvars`` context, the
one the task was created in (:func:`start_in_greenlet`): what Celery's
signals set there (a tracing span, say) is what the job's coroutine sees,
and the coroutine is awaited by the driving task itself, with no task of
its own. Celery's stacks (``task.request``) are kept per driving task
(``_stacks``).

This is the bridge SQLAlchemy uses for its asyncio dialects; written here
from scratch for Celery's needs.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import greenlet

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

__all__ = ("await_only", "in_job_greenlet", "run_in_greenlet", "start_in_greenlet")

T = TypeVar("T")


class _JobGreenlet(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet whose parent is the asyncio task driving it."""

    __slots__ = ("driver",)

    def __init__(self, fn: Callable[..., Any], driver: greenlet.greenlet) -> None:
        super().__init__(fn, driver)
        self.driver = driver


def in_job_greenlet() -> bool:
    """Tell whether the caller runs inside a job greenlet (and may ``await_only``)."""
    return isinstance(greenlet.getcurrent(), _JobGreenlet)


def await_only(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code inside a job greenlet.

    The greenlet is suspended, and the loop runs other jobs, until the
    awaitable is done; its result is returned (its exception raised) here.
    The driving task awaits it in the context the greenlet shares with it.
    """
    current = greenlet.getcurrent()
    if not isinstance(current, _JobGreenlet):
        msg = "await_only() called outside a job greenlet"
        raise RuntimeError(msg)  # noqa: TRY004 - a misuse, not a bad argument
    result: T = current.driver.switch(awaitable)
    return result


async def run_in_greenlet(fn: Callable[..., T], *args: Any, context: contextvars.Context) -> T:  # noqa: ANN401
    """Run the synchronous ``fn(*args)`` to its end, awaiting what it hands over.

    ``context`` must be the context the calling task runs in (the one it was
    created with): the greenlet runs in it too, so the task and the code in
    the greenlet see each other's context variables, and nothing leaks to
    other tasks. :func:`start_in_greenlet` creates such a task.
    """
    job = _JobGreenlet(fn, greenlet.getcurrent())
    job.gr_context = context
    value = job.switch(*args)
    while not job.dead:
        try:
            outcome = await value
        except BaseException:  # noqa: BLE001 - thrown back into the greenlet
            value = job.throw(*sys.exc_info())
        else:
            value = job.switch(outcome)
    result: T = value
    return result


def start_in_greenlet(
    make: Callable[[contextvars.Context], Coroutine[Any, Any, T]],
) -> asyncio.Task[T]:
    """Start a task running ``make(context)`` in a fresh copy of the current context.

    ``make`` builds the coroutine that calls :func:`run_in_greenlet` with
    that context, so the task and its greenlet share it.
    """
    context = contextvars.copy_context()
    return asyncio.get_running_loop().create_task(make(context), context=context)
