"""One asyncio event loop and one started Jobify app per worker process.

Celery runs a task in a pool thread (prefork child's main thread, a thread of
the threads pool, the solo worker's thread) and expects a plain return. The
runtime hands each task's coroutine to the process's event loop and blocks
that pool thread until it finishes, so async functions, Jobify middleware and
whatever the lifespan opened (connection pools, clients) all live on one loop
for the life of the process, whatever the pool.

Whose loop:

* in a worker process, the runtime starts its own loop in a daemon thread the
  first time it is needed (eagerly when the pool process starts, lazily on the
  first task otherwise), runs ``app.startup()`` there, so the lifespan is
  entered once per process, and ``app.shutdown()`` when the worker stops;
* in a process where the user already started the app (``async with app:``,
  e.g. a producer that also runs an embedded worker), tasks run on that loop
  and the app's lifetime stays the user's.

The runtime remembers the pid it started in: a forked child never uses the
parent's loop; it starts its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Final, TypeVar

from jobify_celery._jobify import app_is_started
from jobify_celery._pool_thread import PoolThread

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from jobify import Jobify

__all__ = ("ProcessRuntime",)

logger = logging.getLogger("jobify_celery.worker")

T = TypeVar("T")
_STOP_TIMEOUT: Final = 30.0


class ProcessRuntime:
    """Owns or borrows the loop that runs a bridged app's tasks in a process."""

    def __init__(self, app: Jobify) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._owned = False
        self._host: tuple[int, asyncio.AbstractEventLoop] | None = None
        self._failure: tuple[int, BaseException] | None = None

    def app_started_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Record the loop on which the app has just been started."""
        self._host = (os.getpid(), loop)

    def app_stopped(self) -> None:
        """Forget the loop of an app that has just been shut down."""
        self._host = None

    @property
    def owns_loop(self) -> bool:
        """Tell whether this process's loop was started by the runtime."""
        return self._owned and self._pid == os.getpid()

    def run(self, coro: Coroutine[Any, Any, T], task: Any = None) -> T:  # noqa: ANN401
        """Run ``coro`` on the process's loop and return its result.

        Called from a Celery pool thread; blocks that thread, not the loop.
        While it waits, the thread serves the calls ``coro`` sends it through
        ``current_pool_thread()`` (``task`` is the Celery task executing).
        """
        try:
            loop = self.ensure_started()
        except BaseException:
            coro.close()
            raise
        if asyncio._get_running_loop() is loop:  # noqa: SLF001
            coro.close()
            msg = (
                "A Jobify task was executed synchronously on the event loop that "
                "runs the Jobify app (for example with task_always_eager inside "
                "a coroutine). Publish it instead: await route.push(...)."
            )
            raise RuntimeError(msg)
        pool_thread = PoolThread(loop, task)
        token = pool_thread.enter()
        try:
            outcome = asyncio.run_coroutine_threadsafe(coro, loop)
        finally:
            pool_thread.leave(token)
        return pool_thread.serve(outcome)

    def ensure_started(self) -> asyncio.AbstractEventLoop:
        """Return the loop for this process, starting loop and app if needed."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid() and self._usable(loop):
            return loop
        with self._lock:
            loop = self._loop
            if loop is not None and self._pid == os.getpid() and self._usable(loop):
                return loop
            self._forget_inherited()
            failure = self._failure
            if failure is not None and failure[0] == os.getpid():
                msg = (
                    f"The Jobify app failed to start in worker process {failure[0]} "
                    f"({type(failure[1]).__name__}: {failure[1]}); this process runs "
                    "no Jobify task. Fix the lifespan or plugin, then restart the worker."
                )
                raise RuntimeError(msg) from failure[1]
            host = self._host
            if host is not None and host[0] == os.getpid() and host[1].is_running():
                self._loop, self._pid, self._owned = host[1], host[0], False
                return host[1]
            return self._start_own_loop()

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Shut the app down and stop the loop, if this runtime started them.

        ``timeout`` bounds the wait for ``app.shutdown()``: a loop blocked by
        a synchronous function never gets to it.
        """
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or not self.owns_loop:
                self._loop = None
                return
            try:
                future = asyncio.run_coroutine_threadsafe(self._app.shutdown(), loop)
                future.result(timeout=timeout)
            except TimeoutError:
                logger.warning(
                    "Jobify app shutdown did not finish in %.0fs in process %s; "
                    "leaving the lifespan unfinished",
                    timeout,
                    os.getpid(),
                )
            except Exception:
                logger.exception("Jobify app shutdown failed in worker process %s", os.getpid())
            finally:
                loop.call_soon_threadsafe(loop.stop)
                if thread is not None:
                    thread.join(timeout=timeout)
                if not loop.is_running():
                    loop.close()
                self._loop, self._thread, self._owned, self._host = None, None, False, None

    def _usable(self, loop: asyncio.AbstractEventLoop) -> bool:
        if self._owned:
            return not loop.is_closed()
        return loop.is_running() and app_is_started(self._app)

    def _forget_inherited(self) -> None:
        if self._pid is not None and self._pid != os.getpid():
            # Forked from a process that had a loop: its thread did not come
            # along, so the copy is dead weight. Start afresh.
            self._loop, self._thread, self._owned = None, None, False
            if self._host is not None and self._host[0] != os.getpid():
                self._host = None

    def _start_own_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=_serve_forever, args=(loop,), name="jobify-celery-loop", daemon=True
        )
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._app.startup(), loop).result()
        except BaseException as exc:
            # Jobify cannot start an app twice, so a failed start is final
            # for this process: remember it and say so on every task.
            self._failure = (os.getpid(), exc)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_STOP_TIMEOUT)
            loop.close()
            raise
        self._loop, self._thread, self._pid, self._owned = loop, thread, os.getpid(), True
        logger.info("Jobify app started in worker process %s", os.getpid())
        return loop


def _serve_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        asyncio.set_event_loop(None)
