"""Call back into the Celery pool thread that waits for a job.

A Celery pool thread hands its job's coroutine to the process loop and waits.
While it waits it can do more: it serves calls the coroutine sends back to it.
Wrapped Celery tasks need that: their (synchronous) function must run where
Celery would run it, on the pool thread, where ``self.request``, thread-local
resources (a Django connection, say), soft time limits and ``terminate`` all
behave as they did before the migration.
"""

from __future__ import annotations

import contextvars
import queue
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    from collections.abc import Callable

__all__ = ("PoolThread", "current_pool_thread")

T = TypeVar("T")

_CURRENT: Final[contextvars.ContextVar[PoolThread | None]] = contextvars.ContextVar(
    "jobify_celery_pool_thread", default=None
)
_DONE: Final = object()


class PoolThread:
    """The pool thread running one Celery task, seen from the loop."""

    __slots__ = ("_calls", "_loop", "task")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        task: Any,  # noqa: ANN401
        *,
        inline: bool = False,
    ) -> None:
        self._loop = loop
        #: None when the pool thread drives the loop itself (prefork, solo):
        #: calls run right there, as Celery would run them, one job at a time.
        self._calls: queue.SimpleQueue[Any] | None = None if inline else queue.SimpleQueue()
        #: The Celery task executing (``self`` of a bound task).
        self.task = task

    def enter(self) -> contextvars.Token[PoolThread | None]:
        """Make this the pool thread of the coroutines scheduled from here on."""
        return _CURRENT.set(self)

    @staticmethod
    def leave(token: contextvars.Token[PoolThread | None]) -> None:
        """Undo ``enter``."""
        _CURRENT.reset(token)

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:  # noqa: ANN401
        """Run ``fn(*args, **kwargs)`` on the pool thread; await its result."""
        calls = self._calls
        if calls is None:
            return fn(*args, **kwargs)
        future: asyncio.Future[T] = self._loop.create_future()
        calls.put((fn, args, kwargs, future))
        return await future

    def serve(self, outcome: concurrent.futures.Future[T]) -> T:
        """Serve calls until ``outcome`` (the job's coroutine) is done."""
        calls = self._calls
        if calls is None:
            msg = "a pool thread that drives the loop itself serves no calls"
            raise RuntimeError(msg)
        outcome.add_done_callback(lambda _: calls.put(_DONE))
        try:
            while True:
                item = calls.get()
                if item is _DONE:
                    return outcome.result()
                self._run(*item)
        except BaseException:
            # Interrupted here (a soft time limit, a terminate): the job's
            # coroutine must not run on without its thread.
            outcome.cancel()
            raise

    def _run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: asyncio.Future[Any],
    ) -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            self._loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            self._loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:  # noqa: ANN401
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def current_pool_thread() -> PoolThread | None:
    """Return the pool thread waiting for the job this coroutine runs, if any."""
    return _CURRENT.get()
