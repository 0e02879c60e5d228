"""Run Celery's synchronous task tracer as a coroutine: one greenlet per job.

Celery executes a task through a synchronous tracer (``celery.app.trace``):
signals, the result store, ``Retry``/``Ignore``/``Reject`` handling, callbacks.
The asyncio pool keeps that tracer as it is and runs it inside a greenlet
driven by an asyncio task: when the code inside needs to wait (the job's
coroutine, a Redis store, a publish), it calls :func:`await_only`, which
hands the awaitable to the driving task and suspends the greenlet until it
is done. Many jobs' tracers are thus suspended at once on one loop thread,
each with its own Celery request stack (Celery keeps it per greenlet when
``greenlet`` is installed, as for its gevent and eventlet pools) and its own
``contextvars`` context, copied from the driver's when the job starts.

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
    from collections.abc import Awaitable, Callable

__all__ = ("await_only", "in_job_greenlet", "run_in_greenlet")

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


def await_only(awaitable: Awaitable[T], *, in_job_context: bool = False) -> T:
    """Wait for ``awaitable`` from synchronous code inside a job greenlet.

    The greenlet is suspended, and the loop runs other jobs, until the
    awaitable is done; its result is returned (its exception raised) here.
    ``in_job_context``: run a coroutine as a task of its own in the
    greenlet's ``contextvars`` context (the job's coroutine itself, which must
    see what Celery's signals set there); other awaits (a store, a read) run
    on the driving task as they are, which costs no task.
    """
    current = greenlet.getcurrent()
    if not isinstance(current, _JobGreenlet):
        msg = "await_only() called outside a job greenlet"
        raise RuntimeError(msg)  # noqa: TRY004 - a misuse, not a bad argument
    result: T = current.driver.switch((awaitable, in_job_context))
    return result


async def run_in_greenlet(fn: Callable[..., T], *args: Any) -> T:  # noqa: ANN401
    """Run the synchronous ``fn(*args)`` to its end, awaiting what it hands over.

    A coroutine handed over runs as a task of its own in the greenlet's
    ``contextvars`` context, so what Celery's signals set there (a tracing
    span, say) is what the job's coroutine sees.
    """
    loop = asyncio.get_running_loop()
    job = _JobGreenlet(fn, greenlet.getcurrent())
    job.gr_context = contextvars.copy_context()
    value = job.switch(*args)
    while not job.dead:
        awaitable, in_job_context = value
        try:
            if in_job_context and asyncio.iscoroutine(awaitable):
                outcome = await loop.create_task(awaitable, context=job.gr_context)
            else:
                outcome = await awaitable
        except BaseException:  # noqa: BLE001 - thrown back into the greenlet
            value = job.throw(*sys.exc_info())
        else:
            value = job.switch(outcome)
    result: T = value
    return result
