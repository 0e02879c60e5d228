"""One asyncio event loop and one started Jobify app per worker process.

Celery runs a task in a pool thread (a prefork child's main thread, a thread
of the threads pool, the solo worker's thread) and expects a plain return. The
runtime runs each task's coroutine on the process's event loop, so async
functions, Jobify middleware and whatever the lifespan opened (connection
pools, clients) live on one loop for the life of the process. Three ways:

* **inline** (prefork children and the solo pool, which run one task at a
  time on one thread): the loop belongs to that thread and runs while a task
  runs (``run_until_complete``). No second thread, no hand-over per task. It
  starts when the pool process starts (``worker_process_init``);
* **loop thread** (the threads pool, or a lazy start): the loop runs forever in
  a daemon thread; pool threads hand it their coroutines and wait;
* **borrowed**: in a process where the user already started the app (``async
  with app:``, e.g. a producer running an embedded worker), tasks run on that
  loop and the app's lifetime stays the user's.

An own loop starts the app (``app.startup()``: the lifespan is entered once per
process) and stops it when the worker stops. The runtime remembers its pid: a
forked child never uses its parent's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Final, TypeVar

from jobify_celery._aiopool._green import await_only, in_job_greenlet
from jobify_celery._jobify import app_is_started
from jobify_celery._pool_thread import PoolThread
from jobify_celery._tasks import stop_task

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
        self._lock = threading.RLock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: Thread that drives an inline loop (None: loop thread or borrowed).
        self._inline_owner: int | None = None
        self._owned = False
        self._host: tuple[int, asyncio.AbstractEventLoop] | None = None
        self._failure: tuple[int, BaseException] | None = None

    def app_started_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Record the loop on which the app has just been started."""
        self._host = (os.getpid(), loop)

    def app_stopped(self) -> None:
        """Forget the loop of an app that has just been shut down."""
        self._host = None

    def drives_loop_here(self) -> bool:
        """Tell whether the calling thread runs the loop itself, one job at a time.

        True in a prefork pool process and in the solo pool, whose loop runs
        only while a job runs on that very thread.
        """
        return self._inline_owner == threading.get_ident() and self._pid == os.getpid()

    @property
    def owns_loop(self) -> bool:
        """Tell whether this process's loop was started by the runtime."""
        return self._owned and self._pid == os.getpid()

    def run(self, coro: Coroutine[Any, Any, T], task: Any = None) -> T:  # noqa: ANN401
        """Run ``coro`` on the process's loop and return its result.

        Called from a Celery pool thread. With a loop thread, this thread waits
        and serves the calls ``coro`` sends it through ``current_pool_thread()``
        (``task`` is the Celery task executing); inline, it runs the loop. In
        the asyncio pool (a job greenlet on the loop's own thread), the
        greenlet waits and the loop runs other jobs meanwhile.
        """
        if in_job_greenlet():
            return await_only(coro)
        loop = self._loop
        if loop is not None and self._inline_owner is not None and self._pid == os.getpid():
            if self._inline_owner == threading.get_ident():
                # This thread started the loop and drives it (stop() clears both).
                return self._run_inline(loop, coro, task)
            if self._adopt_inline(loop):
                return self._run_inline(loop, coro, task)
        try:
            loop = self.ensure_started()
        except BaseException:
            coro.close()
            raise
        if self._inline_owner == threading.get_ident():
            return self._run_inline(loop, coro, task)
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

    def start_inline(self) -> None:
        """Start loop and app on the calling thread (a prefork child, solo).

        In a process whose app is already started (an embedded worker), the
        app's loop is borrowed instead.
        """
        with self._lock:
            self._forget_inherited()
            if self._loop is not None and self._pid == os.getpid():
                return
            host = self._host
            if host is not None and host[0] == os.getpid() and host[1].is_running():
                self.ensure_started()
                return
            self._raise_if_failed()
            loop = asyncio.new_event_loop()
            try:
                self._start_app(loop, lambda: loop.run_until_complete(self._app.startup()))
            except BaseException:
                loop.close()
                raise
            self._inline_owner = threading.get_ident()

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
            self._raise_if_failed()
            host = self._host
            if host is not None and host[0] == os.getpid() and host[1].is_running():
                self._loop, self._pid, self._owned = host[1], host[0], False
                return host[1]
            return self._start_loop_thread()

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Shut the app down and stop the loop, if this runtime started them.

        ``timeout`` bounds the wait for ``app.shutdown()`` (the bridge's own
        part ends within ``CLOSE_TIMEOUT``; the rest is the lifespan's exit): a
        loop blocked by a synchronous function never gets to it.
        """
        with self._lock:
            loop = self._loop
            if loop is None or not self.owns_loop:
                self._loop = None
                return
            try:
                if self._inline_owner is not None:
                    self._stop_inline(loop, timeout)
                else:
                    self._stop_loop_thread(loop, timeout)
            finally:
                self._loop, self._thread, self._owned, self._host = None, None, False, None
                self._inline_owner = None

    # -- internals ----------------------------------------------------------

    def _adopt_inline(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Let the calling thread drive an inline loop that no thread is running.

        A solo pool built on one thread and run on another (Celery's
        ``start_worker`` in a test) starts the loop where the pool is built;
        its tasks come on the worker's thread, which takes the loop over.
        """
        with self._lock:
            if self._loop is not loop or self._inline_owner is None or loop.is_running():
                return False
            self._inline_owner = threading.get_ident()
            return True

    def _run_inline(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        task: Any,  # noqa: ANN401
    ) -> T:
        pool_thread = PoolThread(loop, task, inline=True)
        token = pool_thread.enter()
        try:
            job = loop.create_task(_stopping_loop_when_done(loop, coro))
        finally:
            pool_thread.leave(token)
        try:
            # Not run_until_complete: its done callback costs the loop a
            # second iteration per task; the job stops the loop itself, so a
            # job that never waits runs in one iteration.
            while not job.done():
                loop.run_forever()
            return job.result()
        except BaseException:
            # Interrupted (a soft time limit, a terminate): cancel the job so
            # its finally blocks run before the process moves on.
            if not job.done():
                job.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(job)
            raise

    def _stop_inline(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        mine = self._inline_owner == threading.get_ident()
        if loop.is_running() or not (mine or self._adopt_inline(loop)):
            logger.warning("Jobify app left running: stopped from another thread")
            return
        try:
            shutdown = loop.create_task(self._app.shutdown())
            what = f"the Jobify app's shutdown in process {os.getpid()}"
            if loop.run_until_complete(stop_task(shutdown, timeout, what, cancel=False)):
                shutdown.result()
        except Exception:
            logger.exception("Jobify app shutdown failed in worker process %s", os.getpid())
        finally:
            loop.close()

    def _stop_loop_thread(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
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
            if self._thread is not None:
                self._thread.join(timeout=timeout)
            if not loop.is_running():
                loop.close()

    def _usable(self, loop: asyncio.AbstractEventLoop) -> bool:
        if self._owned:
            return not loop.is_closed()
        return loop.is_running() and app_is_started(self._app)

    def runs_app_elsewhere(self, other_than: asyncio.AbstractEventLoop) -> bool:
        """Tell whether this runtime started the app on a loop not ``other_than``, now idle.

        True in a process where a sync call (an eager ``.delay()``) or an
        in-process test worker started the app on the runtime's own loop,
        when the app is then started on another loop (``async with app:``).
        An inline loop counts only while no job runs on it.
        """
        loop = self._loop
        if not self.owns_loop or loop is None or loop is other_than:
            return False
        if self._thread is None and loop.is_running():
            return False  # an inline loop running a job right now
        return app_is_started(self._app)

    def _raise_if_failed(self) -> None:
        failure = self._failure
        if failure is not None and failure[0] == os.getpid():
            msg = (
                f"The Jobify app failed to start in worker process {failure[0]} "
                f"({type(failure[1]).__name__}: {failure[1]}); this process runs "
                "no Jobify task. Fix the lifespan or plugin, then restart the worker."
            )
            raise RuntimeError(msg) from failure[1]

    def _forget_inherited(self) -> None:
        if self._pid is not None and self._pid != os.getpid():
            # Forked from a process that had a loop: its thread did not come
            # along, so the copy is dead weight. Start afresh.
            self._loop, self._thread, self._owned, self._inline_owner = None, None, False, None
            if self._host is not None and self._host[0] != os.getpid():
                self._host = None

    def _start_loop_thread(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=_serve_forever, args=(loop,), name="jobify-celery-loop", daemon=True
        )
        thread.start()

        def startup() -> None:
            asyncio.run_coroutine_threadsafe(self._app.startup(), loop).result()

        try:
            self._start_app(loop, startup)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_STOP_TIMEOUT)
            loop.close()
            raise
        self._thread = thread
        return loop

    def _start_app(self, loop: asyncio.AbstractEventLoop, startup: Any) -> None:  # noqa: ANN401
        try:
            startup()
        except BaseException as exc:
            # Jobify cannot start an app twice, so a failed start is final
            # for this process: remember it and say so on every task.
            self._failure = (os.getpid(), exc)
            raise
        self._loop, self._pid, self._owned = loop, os.getpid(), True
        logger.info("Jobify app started in worker process %s", os.getpid())


async def _stopping_loop_when_done(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]
) -> T:
    try:
        return await coro
    finally:
        loop.stop()


def _serve_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        asyncio.set_event_loop(None)
