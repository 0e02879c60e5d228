"""The asyncio pool: a Celery pool that runs Jobify jobs as coroutines on one loop.

``celery worker -c N`` with this pool keeps up to N jobs in flight in one
process, on the process's event loop (the one the bridge's runtime starts,
with the app's lifespan entered once). Each Jobify job is traced on the
loop as Celery traces a task (``_trace``), so signals, result states, acks,
retries, ``Ignore``/``Reject`` and events are Celery's; the job's coroutine
and the bridge's I/O wait on the loop instead of a thread. A job whose task
``_trace`` cannot stand in for runs Celery's own tracer in a greenlet
(``_green``).

What does not run on the loop: plain Celery tasks and wrapped Celery tasks
(their functions are synchronous and expect a thread of their own) go to a
bounded thread pool, run as Celery's threads pool runs them.

Time limits end only the job concerned, by asyncio cancellation
(``_jobs.Ending``). A warm shutdown stops taking jobs, lets those in flight
finish for ``shutdown_grace`` seconds, then ends the rest so their messages
go back to the queue.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from billiard.einfo import ExceptionInfo
from celery.app.trace import fast_trace_task, trace_task_ret
from celery.concurrency.base import BasePool, apply_target
from celery.concurrency.thread import ApplyResult
from celery.exceptions import WorkerLostError, WorkerShutdown, WorkerTerminate

from jobify_celery._aiopool._gc import tune_collector
from jobify_celery._aiopool._green import run_in_greenlet, start_in_greenlet
from jobify_celery._aiopool._jobs import Ending, PoolJob, enter_pool_job
from jobify_celery._aiopool._stacks import key_stacks_by_task
from jobify_celery._aiopool._trace import decoded_body, task_hooks, trace_on_loop
from jobify_celery._aiopool._watchdog import LoopWatchdog

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Awaitable, Callable

__all__ = ("AsyncioPool",)

logger = logging.getLogger("jobify_celery.worker")

#: Threads for the synchronous tasks of a worker whose ``-c`` is large.
_MAX_SYNC_THREADS: Final = 32
#: What Celery hands a pool to run a task with: its tracer, as a function.
_CELERY_TRACERS: Final = (fast_trace_task, trace_task_ret)
#: Their arguments: name, id, request, body, content type, content encoding.
_TRACER_ARGS: Final = 6
#: How long ended jobs (grace over) get to settle their messages.
_SETTLE_SECONDS: Final = 5.0


def _settleable(accept_callback: Callable[..., Any] | None) -> bool:
    """Tell whether a job's message can still be acknowledged (its channel is open)."""
    request = getattr(accept_callback, "__self__", None)
    channel = getattr(getattr(request, "message", None), "channel", None)
    return bool(getattr(channel, "is_open", True))


class _OnLoop(NamedTuple):
    """How to trace a job on the loop (``_trace.trace_on_loop``)."""

    #: Celery's tracer arguments: name, id, request, body, content type and encoding.
    args: tuple[Any, ...]
    #: Whether Celery chose its ``fast_trace_task`` (``celery worker``).
    fast: bool
    #: The task's own hooks (``_trace.task_hooks``).
    hooks: frozenset[str]


class _Handover(NamedTuple):
    """A job Celery's consumer thread has handed to the loop, with its callbacks."""

    job: PoolJob
    #: Celery's tracer for the job, to run in a greenlet.
    run: Callable[[], Any] | None
    #: Or, for a job traced on the loop, how.
    on_loop: _OnLoop | None
    callback: Callable[..., Any] | None
    accept_callback: Callable[..., Any] | None
    #: ``timeout_callback``, soft and hard time limits (seconds, or None).
    limits: tuple[Callable[..., Any] | None, float | None, float | None]


class _Applied:
    """What ``on_apply`` returns for a job on the loop (Celery keeps a weak reference)."""

    __slots__ = ("__weakref__", "_job", "_loop")

    def __init__(self, job: PoolJob, loop: asyncio.AbstractEventLoop) -> None:
        self._job = job
        self._loop = loop

    def terminate(self, signal: Any = None) -> None:  # noqa: ANN401
        """End the job cooperatively (no process to kill); Celery's worker thread calls it.

        For ``revoke(terminate=True)`` (the job's id is revoked: it stops, not
        to run again) or for a cold shutdown's cancel (not revoked: its
        message goes back to the queue).
        """
        del signal
        from celery.worker import state  # noqa: PLC0415 - the worker's own state

        revoked = self._job.task_id in state.revoked
        ending = Ending.TERMINATED if revoked else Ending.SHUTDOWN
        self._loop.call_soon_threadsafe(self._job.end, ending)


class AsyncioPool(BasePool):  # type: ignore[misc]
    """Celery pool running Jobify jobs as coroutines: ``-c`` jobs in flight on one loop."""

    signal_safe = False
    body_can_be_buffer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: dict[PoolJob, asyncio.Task[None]] = {}
        #: Jobs handed over by Celery's consumer thread, not started yet.
        self._incoming: collections.deque[_Handover] = collections.deque()
        self._wakeup_due = False
        self._closing = False
        self._watchdog: LoopWatchdog | None = None
        self._on_loop: Callable[[str], bool] = lambda _name: False
        self._traced_on_loop: Callable[[str], bool] = lambda _name: False
        #: Per task name: its own hooks if its jobs are traced on the loop
        #: (``_trace``), else None.
        self._traced: dict[str, frozenset[str] | None] = {}
        self._call: Callable[..., Any] | None = None
        self._grace = 30.0

    # -- Celery's pool interface ---------------------------------------------

    def on_start(self) -> None:
        """Start the process's loop and app (once), the sync threads and the watchdog."""
        from jobify_celery._bridge import pool_parts  # noqa: PLC0415 - the bridge imports nothing of ours

        parts = pool_parts(self.app)
        self._loop = parts.runtime.ensure_started()
        self._on_loop = parts.runs_on_loop
        self._traced_on_loop = parts.traced_on_loop
        self._call = parts.call
        key_stacks_by_task(self.app.tasks.values())
        self._grace = parts.shutdown_grace
        self._threads = ThreadPoolExecutor(
            max_workers=max(1, min(self.limit or 1, _MAX_SYNC_THREADS)),
            thread_name_prefix="jobify-celery-sync",
        )
        self._watchdog = LoopWatchdog(self._loop, threshold=parts.blocked_loop_threshold)
        self._watchdog.start()
        if parts.tune_gc and threading.current_thread() is threading.main_thread():
            # A worker process of its own (`celery worker`), not one started
            # inside a test process (Celery's start_worker runs on a thread).
            tune_collector()

    def on_apply(  # noqa: PLR0913, PLR0917 - Celery's signature
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        timeout_callback: Callable[..., Any] | None = None,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        **_: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        """Run a job on the loop, or a synchronous task on a thread."""
        args = tuple(args or ())
        name = str(args[0]) if args else ""
        if target is trace_task_ret:
            # Celery's tracer finds the app through the thread's current app
            # unless told: the loop's thread may have another (a worker in a
            # test process), so it is told.
            kwargs = {**(kwargs or {}), "app": self.app}
        loop = self._loop
        if loop is None or not self._on_loop(name):
            threads = self._threads
            if threads is None:  # pragma: no cover - Celery starts a pool before applying
                msg = "the asyncio pool is not started"
                raise RuntimeError(msg)
            future = threads.submit(apply_target, target, args, kwargs, callback, accept_callback)
            return ApplyResult(future)
        job = PoolJob(task_id=str(args[1]) if len(args) > 1 else "", name=name)
        run: Callable[[], Any] | None = None
        on_loop: _OnLoop | None = None
        hooks = self._on_loop_trace(name) if target in _CELERY_TRACERS else None
        if hooks is not None:
            payload = decoded_body(callback) if len(args) == _TRACER_ARGS else None
            if payload is not None:
                # name, id, request, then the body as decoded (no content type).
                args = (*args[:3], payload, None, None)
            on_loop = _OnLoop(args, target is fast_trace_task, hooks)
        else:
            run = functools.partial(target, *args, **(kwargs or {}))
        limits = (timeout_callback, soft_timeout, timeout)
        job.handle = applied = _Applied(job, loop)
        self._incoming.append(_Handover(job, run, on_loop, callback, accept_callback, limits))
        if not self._wakeup_due:
            # One wake-up of the loop for a burst of jobs, not one per job.
            self._wakeup_due = True
            loop.call_soon_threadsafe(self._launch_incoming)
        return applied

    def _on_loop_trace(self, name: str) -> frozenset[str] | None:
        if name in self._traced:
            return self._traced[name]
        hooks = None
        if self._call is not None and self._traced_on_loop(name):
            hooks = task_hooks(self.app.tasks[name])
        self._traced[name] = hooks
        return hooks

    def on_stop(self) -> None:
        """Warm shutdown: no new job; jobs in flight get ``shutdown_grace``, then end.

        After a cold shutdown (SIGQUIT, or a second Ctrl+C) there is no grace.
        """
        from celery.worker import state  # noqa: PLC0415 - the worker's own state

        cold = state.should_terminate is not None and state.should_terminate is not False
        grace = 0.0 if cold else self._grace
        loop = self._loop
        if loop is not None and loop.is_running():
            settle = asyncio.run_coroutine_threadsafe(self._drain(grace), loop)
            try:
                settle.result(grace + _SETTLE_SECONDS + 1)
            except Exception:
                logger.exception("The asyncio pool did not stop cleanly")
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        if self._watchdog is not None:
            self._watchdog.stop()

    def on_terminate(self) -> None:
        """Cold shutdown: end every job now; their messages go back to the queue."""
        self._grace = 0.0
        self.on_stop()

    def terminate_job(self, pid: int, signal: Any = None) -> None:  # noqa: ANN401
        """Nothing to kill: ``revoke(terminate=True)`` ends the job through its ``_Applied``."""
        del pid, signal

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()
        info["running"] = sum(1 for job in self._running if job.started is not None)
        info["waiting-for-a-slot"] = sum(1 for job in self._running if job.started is None)
        return info

    # -- on the loop ---------------------------------------------------------

    def _launch_incoming(self) -> None:
        """Start every job handed over since the last wake-up (on the loop)."""
        self._wakeup_due = False
        incoming = self._incoming
        run_job = self._run_job
        while incoming:
            handed = incoming.popleft()
            job = handed.job
            task = start_in_greenlet(functools.partial(run_job, handed))
            self._running[job] = task
            task.add_done_callback(functools.partial(self._forget, job))

    def _forget(self, job: PoolJob, _task: asyncio.Task[None]) -> None:
        self._running.pop(job, None)

    async def _run_job(self, handed: _Handover, context: contextvars.Context) -> None:
        job = handed.job
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(max(1, self.limit or 1))
        async with slots:
            if not self._may_start(handed):
                return
            loop = asyncio.get_running_loop()
            job.started = loop.time()
            timers = self._arm_limits(job, *handed.limits)
            token = enter_pool_job(job)
            try:
                # What Celery's apply_target does around its tracer; inline,
                # as each coroutine layer costs memory per job in flight.
                if handed.accept_callback is not None:
                    handed.accept_callback(os.getpid(), time.monotonic())
                try:
                    ret = await self._tracer(handed, context)
                except (WorkerShutdown, WorkerTerminate):
                    raise
                except Exception:
                    # Celery's tracer handles the task's own errors: this is one of
                    # its own (a task missing from the registry, a broken signal
                    # handler), or a body that could not be decoded.
                    logger.exception("Job %s[%s] broke out of the tracer", job.name, job.task_id)
                    self._fail(job, handed.callback)
                except BaseException as exc:  # noqa: BLE001 - as apply_target: worker lost
                    self._lost(job, handed.callback, exc)
                else:
                    # A hard limit's job is reported and settled by Celery's timeout handler.
                    if job.ending is not Ending.HARD_LIMIT and handed.callback is not None:
                        handed.callback(ret)
            finally:
                for timer in timers:
                    timer.cancel()
                token.var.reset(token)

    def _may_start(self, handed: _Handover) -> bool:
        """Tell whether a job that got its slot may start."""
        if self._closing:
            return False  # never accepted: the message goes back when the worker leaves
        if not _settleable(handed.accept_callback):
            # Its connection was lost while it waited for a slot: the broker
            # has handed it out again, and its ack could not be sent.
            job = handed.job
            logger.info("Job %s[%s] skipped: its message went back", job.name, job.task_id)
            return False
        return True

    def _tracer(self, handed: _Handover, context: contextvars.Context) -> Awaitable[Any]:
        """Return the job's tracing: on the loop (``_trace``), or Celery's in a greenlet."""
        blocking = functools.partial(run_in_greenlet, context=context)
        if handed.run is not None:
            return blocking(handed.run)
        on_loop = handed.on_loop
        assert on_loop is not None  # noqa: S101 - one or the other, by on_apply
        assert self._call is not None  # noqa: S101 - set by on_start
        return trace_on_loop(
            self.app,
            *on_loop.args,
            fast=on_loop.fast,
            hooks=on_loop.hooks,
            call=functools.partial(self._call, blocking=blocking),
            blocking=blocking,
        )

    def _lost(self, job: PoolJob, callback: Callable[..., Any] | None, exc: BaseException) -> None:
        """Report ``exc`` (not an Exception) as Celery's pools do: the worker was lost."""
        try:
            raise WorkerLostError(repr(exc)).with_traceback(exc.__traceback__) from exc
        except WorkerLostError:
            self._fail(job, callback)

    @staticmethod
    def _fail(job: PoolJob, on_success: Callable[..., Any] | None) -> None:
        """Report the exception being handled as the job's failure, as Celery's pools do.

        ``on_success`` is the request's (Celery hands the pool no other): its
        request's ``on_failure`` stores the failure and settles the message
        (acknowledged, or requeued for a lost worker when the task says so).
        """
        if job.ending is Ending.HARD_LIMIT:
            return  # reported and settled by Celery's timeout handler
        on_failure = getattr(getattr(on_success, "__self__", None), "on_failure", None)
        if on_failure is None:
            logger.error("Job %s[%s] could not be reported as failed", job.name, job.task_id)
            return
        on_failure(ExceptionInfo(), return_ok=False)

    def _arm_limits(
        self,
        job: PoolJob,
        timeout_callback: Callable[..., Any] | None,
        soft: float | None,
        hard: float | None,
    ) -> list[asyncio.TimerHandle]:
        loop = asyncio.get_running_loop()
        timers = []
        if soft:
            timers.append(loop.call_later(soft, self._soft_limit, job, timeout_callback, soft))
        if hard:
            timers.append(loop.call_later(hard, self._hard_limit, job, timeout_callback, hard))
        return timers

    def _soft_limit(self, job: PoolJob, report: Callable[..., Any] | None, seconds: float) -> None:
        job.end(Ending.SOFT_LIMIT)
        if report is not None:
            report(True, seconds)  # noqa: FBT003 - Celery's signature: (soft, timeout)

    def _hard_limit(self, job: PoolJob, report: Callable[..., Any] | None, seconds: float) -> None:
        job.end(Ending.HARD_LIMIT)
        if report is not None and self._threads is not None:
            # Celery stores TimeLimitExceeded and settles the message: blocking
            # calls, so on a thread; the job's own outcome is dropped.
            self._threads.submit(report, False, seconds)  # noqa: FBT003

    async def _drain(self, grace: float) -> None:
        self._closing = True
        running = set(self._running.values())
        if running:
            await asyncio.wait(running, timeout=grace)
        left = [job for job, task in self._running.items() if not task.done()]
        if left:
            logger.warning(
                "Warm shutdown: %d job(s) still running after %.0f s go back to the queue",
                len(left),
                grace,
            )
            for job in left:
                job.end(Ending.SHUTDOWN)
            await asyncio.wait(set(self._running.values()), timeout=_SETTLE_SECONDS)
