"""One job of the asyncio pool: what it is, and why it may have to end early.

A job's coroutine (the route's inner chain, run by ``_worker.Executor``)
registers its asyncio task here while it runs; the pool ends a job by
cancelling that task with a reason the executor turns into Celery's outcome:

* ``SOFT_LIMIT``: Celery's ``soft_time_limit`` passed: the job fails with
  ``SoftTimeLimitExceeded``, as under prefork when the function does not
  catch it;
* ``HARD_LIMIT``: its ``time_limit`` passed: the pool reports the timeout to
  Celery (``TimeLimitExceeded`` stored, the message settled) and the job's
  own outcome is dropped;
* ``SHUTDOWN``: the worker stopped and the grace period ran out: the message
  goes back to the queue (``Reject(requeue=True)``) and runs again elsewhere;
* ``TERMINATED``: ``revoke(terminate=True)``: Celery has recorded the revoke,
  the job stops without a state of its own (``Ignore``). A job Celery cancels
  without a revoke (its cold shutdown) ends for ``SHUTDOWN`` instead.

Pure bookkeeping, with one ``ContextVar`` through which the executor finds
the job it runs for.
"""

from __future__ import annotations

import contextvars
import enum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import asyncio

__all__ = ("Ending", "PoolJob", "current_pool_job")


class Ending(enum.Enum):
    """Why the pool ended a job before it finished."""

    SOFT_LIMIT = "soft_time_limit"
    HARD_LIMIT = "time_limit"
    SHUTDOWN = "shutdown"
    TERMINATED = "terminated"


class PoolJob:
    """A job the asyncio pool runs: its Celery identity and its running task."""

    __slots__ = ("ending", "handle", "name", "started", "task", "task_id")

    def __init__(self, task_id: str, name: str) -> None:
        self.task_id = task_id
        self.name = name
        #: When it started, on the loop's clock (None: waiting for a slot).
        self.started: float | None = None
        #: The asyncio task running its inner chain, while the chain runs.
        self.task: asyncio.Task[object] | None = None
        #: Set when the pool ends it early.
        self.ending: Ending | None = None
        #: What Celery holds a weak reference to (to terminate the job): kept
        #: alive here for as long as the pool keeps the job.
        self.handle: object | None = None

    def end(self, ending: Ending) -> None:
        """End the job for ``ending``; a job already ending keeps its first reason."""
        if self.ending is None:
            self.ending = ending
        if self.task is not None and not self.task.done():
            self.task.cancel()


_CURRENT: Final[contextvars.ContextVar[PoolJob | None]] = contextvars.ContextVar(
    "jobify_celery_pool_job", default=None
)


def current_pool_job() -> PoolJob | None:
    """Return the pool job this code runs for, if it runs in the asyncio pool."""
    return _CURRENT.get()


def enter_pool_job(job: PoolJob) -> contextvars.Token[PoolJob | None]:
    """Make ``job`` the current pool job of this context."""
    return _CURRENT.set(job)
