"""Celery's task and request stacks, one per asyncio task in the asyncio pool.

Celery keeps the task being executed (``celery.current_task``, the parent of
what it publishes) and each task's ``request`` on stacks local to the
running greenlet (``celery.utils.threads.Local``). A job the asyncio pool
traces on the loop itself (``_trace``) runs in no greenlet of its own while
it waits: every job on the loop would share the loop thread's stacks, and
one job's ``task.request`` would be another's.

The pool therefore keys those stacks by the asyncio task running on the
calling thread's loop, and by the greenlet elsewhere (Celery's own key):
a job's task sees its own request, on the loop or in a greenlet it drives,
and the consumer and the synchronous threads see what they always saw.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import greenlet
from celery._state import _task_stack

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ("ident", "key_stacks_by_task")

# asyncio's C accessor (in asyncio.__all__): None, not an exception, off a loop.
_running_loop = asyncio._get_running_loop  # noqa: SLF001
_current_task = asyncio.current_task
_current_greenlet = greenlet.getcurrent


def ident() -> object:
    """Return what Celery's stacks are kept per: this asyncio task, or this greenlet."""
    loop = _running_loop()
    if loop is not None:
        task = _current_task(loop)
        if task is not None:
            return task
    return _current_greenlet()


def key_stacks_by_task(tasks: Iterable[Any]) -> None:
    """Keep ``celery.current_task``'s stack and each task's request stack per asyncio task."""
    _task_stack.__ident_func__ = ident
    for task in tasks:
        stack = getattr(task, "request_stack", None)
        if stack is not None and hasattr(stack, "_local"):
            stack.__ident_func__ = ident
