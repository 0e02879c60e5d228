"""The worker side: a Celery task per route that runs Jobify's inner chain.

Each route is registered as a Celery task whose body hands the call to the
process's event loop (see ``_runtime``). There the message is turned back
into a ``JobContext``:

* ``job``: a ``Job`` with the Celery task id, ``exec_at`` = the planned time
  (the producer's, else the ETA, else the moment the worker got it), status
  RUNNING;
* ``runnable``: the function with the message's arguments loaded to their
  annotated types (``ArgumentLoadError`` naming the parameter otherwise);
* ``request_state``: what the producer's outer middleware stored, plus
  ``celery_request`` (the Celery request, ``task.request``), ``celery_task``
  (the bound Celery task) and ``attempt`` (1 for the first run, 2 for the
  first retry, ...);
* ``state``, ``route_options``, ``jobify_config``, ``app`` and a working
  ``schedule_builder``, as Jobify gives them.

The route's inner chain (user middleware, exception handlers, timeout) runs
around the function; whatever it returns is the task's result, dumped for the
return annotation. A failure the route's ``retry`` covers is re-published
through the broker with the policy's delay; a job whose state turns REVOKED
while it runs (``await job.cancel()``) is cancelled. Celery's own task
signals fire around the whole call as for any Celery task. With the Redis
result backend, the run's state is stored in one round trip (``_store``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from celery import states
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded, TaskPredicate
from jobify import INJECT, Cron, CronContext, Job, JobStatus, RequestState, SmartRetry
from jobify.exceptions import JobTimeoutError

from jobify_celery._aiopool._jobs import Ending, current_pool_job
from jobify_celery._codec import (
    HEADER_KEY,
    decode_call,
    decode_header,
    ensure_json,
    parse_time,
    positional_names,
    publish_token,
    wire_signature,
)
from jobify_celery._errors import AppBindingError, ArgumentLoadError, RemoteJobTimeoutError
from jobify_celery._jobify import (
    build_job_context,
    func_spec_of,
    route_by_name,
    run_inner_chain,
    running_job,
)
from jobify_celery._options import retry_policy
from jobify_celery._outcome import read_meta
from jobify_celery._store import install_quick_store
from jobify_celery._supersede import Verdict, current_publish, verdict

if TYPE_CHECKING:
    import inspect
    from collections.abc import Awaitable, Callable, Coroutine
    from zoneinfo import ZoneInfo

    from celery import Task
    from jobify import JobContext, Jobify

    from jobify_celery._aiopool._jobs import PoolJob
    from jobify_celery._codec import CronTick, ValueCodec
    from jobify_celery._jobify import RootRoute
    from jobify_celery._producer import ProducerSession
    from jobify_celery._runtime import ProcessRuntime

__all__ = ("Executor", "injected_names")

logger = logging.getLogger("jobify_celery.worker")

#: Seconds a job runs before its worker starts following it for a cancel.
_CANCEL_WATCH_AFTER: Final = 0.2
#: Failures that are never retried: bad input, and Celery's own control flow.
_NEVER_RETRIED: Final = (ArgumentLoadError, AppBindingError, TaskPredicate)


def injected_names(signature: inspect.Signature) -> frozenset[str]:
    """Return the parameters Jobify fills by injection (default ``INJECT``)."""
    return frozenset(n for n, p in signature.parameters.items() if p.default is INJECT)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a route needs per call, worked out once per process."""

    route: RootRoute[..., Any]
    signature: inspect.Signature
    wire: inspect.Signature
    positional: tuple[str, ...] | None
    hints: dict[str, Any]
    result_type: Any
    #: How an error about the result names it.
    result_where: str
    retry: SmartRetry | None


class _CancelWatch:
    """Cancels a running job when its state turns REVOKED (``job.cancel()``)."""

    __slots__ = ("following", "requested", "started", "task", "task_id")

    def __init__(self, task: asyncio.Task[Any] | None, task_id: str, started: float) -> None:
        self.task = task
        self.task_id = task_id
        #: When the job started, on its loop's clock.
        self.started = started
        self.requested = False
        self.following = False

    def on_meta(self, meta: dict[str, Any]) -> bool:
        outcome = read_meta(meta)
        if outcome.done and outcome.status is JobStatus.CANCELLED:
            self.requested = True
            if self.task is not None:
                self.task.cancel()
            return True
        return False

    def on_lost(self, reason: str) -> None:
        """Let the job run on: a cancel can no longer reach it (the watcher logs why)."""
        del reason


class _LongRunning:
    """Hands the jobs that have run ``_CANCEL_WATCH_AFTER`` seconds to ``follow``.

    One timer for all the jobs of a loop, armed for the oldest job not yet
    handed over, instead of a timer per job: most jobs finish long before it.
    Used on the loop's thread only.
    """

    __slots__ = ("_follow", "_jobs", "_loop", "_timer")

    def __init__(self, follow: Callable[[_CancelWatch], None]) -> None:
        self._follow = follow
        #: Running jobs not handed over yet, oldest first (dicts keep order).
        self._jobs: dict[_CancelWatch, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, watch: _CancelWatch, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            # A new loop (a forked child, an app started again): the old
            # loop's jobs and timer are gone with it.
            self._jobs.clear()
            self._loop, self._timer = loop, None
        self._jobs[watch] = None
        if self._timer is None:
            self._timer = loop.call_at(watch.started + _CANCEL_WATCH_AFTER, self._sweep)

    def discard(self, watch: _CancelWatch) -> None:
        self._jobs.pop(watch, None)

    def _sweep(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        due = loop.time() - _CANCEL_WATCH_AFTER
        jobs = self._jobs
        handed: list[_CancelWatch] = []
        while jobs:
            watch = next(iter(jobs))
            if watch.started > due:
                self._timer = loop.call_at(watch.started + _CANCEL_WATCH_AFTER, self._sweep)
                break
            del jobs[watch]
            handed.append(watch)
        for watch in handed:
            self._follow(watch)


def _forget_job(_job_id: str) -> None:
    """Worker-side jobs are not tracked: the producer's handle is the job."""


class Executor:
    """Runs one Celery invocation of a Jobify route on the process's loop."""

    __slots__ = ("_app", "_codec", "_done", "_long_running", "_plans", "_runtime", "_session_of")

    def __init__(
        self,
        *,
        app: Jobify,
        runtime: ProcessRuntime,
        codec: ValueCodec,
        session_of: Callable[[], ProducerSession],
    ) -> None:
        self._app = app
        self._runtime = runtime
        self._codec = codec
        self._session_of = session_of
        self._plans: dict[str, _Plan] = {}
        self._long_running = _LongRunning(self._watch)
        #: The one set event every run's Job shares (see ``running_job``).
        self._done = asyncio.Event()
        self._done.set()

    def __call__(self, task: Task, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:  # noqa: ANN401
        """Run the route ``name`` for the Celery ``task`` now executing.

        A failure the route's retry policy covers becomes a Celery retry: the
        same message is published again with the policy's delay as its
        countdown (before this one is acknowledged), so no worker slot sleeps
        and a worker lost in between loses no attempt.
        """
        # task.request lives on the pool thread's request stack: read it here.
        request = task.request
        install_quick_store(task.backend)  # this thread's backend, as Celery's tracer uses
        if request.eta:
            self._check_still_wanted(task, request)
        try:
            return self._runtime.run(self._execute(task, request, name, args, kwargs), task)
        except Exception as exc:
            self._retry_by_policy(task, name, exc, request)
            raise

    async def call_async(
        self,
        task: Task,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        blocking: Callable[..., Awaitable[Any]],
    ) -> Any:  # noqa: ANN401
        """Do what a call does, as a coroutine on the loop (the asyncio pool's tracer).

        ``blocking`` runs the synchronous parts that may wait (the checks of
        a job that waited, the publish of a retry) in a greenlet of their own.
        """
        request = task.request
        install_quick_store(task.backend)
        if request.eta:
            await blocking(self._check_still_wanted, task, request)
        try:
            return await self._prepare(task, request, name, args, kwargs)
        except Exception as exc:
            if self._retry_delay(name, exc, request) is not None:
                await blocking(self._retry_while_handling, task, name, exc, request)
            raise

    def _check_still_wanted(self, task: Task, request: Any) -> None:  # noqa: ANN401
        """Raise ``Ignore`` for a job that waited and was cancelled or replaced meanwhile."""
        decision = self._verdict(task, request)
        if decision is Verdict.CANCELLED:
            # Its producer stored REVOKED already: store nothing over it.
            logger.info("Skipping job %s: cancelled by its producer", request.id)
            raise Ignore
        if decision is Verdict.REPLACED:
            # A replace published this job again; that publish will run.
            task.backend.store_result(request.id, None, states.PENDING, request=request)
            raise Ignore

    def _retry_by_policy(self, task: Task, name: str, exc: Exception, request: Any) -> None:  # noqa: ANN401
        """Raise the Celery retry the route's policy asks for ``exc``; return if none.

        The retry is published here (``task.retry``), before this message is
        acknowledged, so no worker slot sleeps and a worker lost in between
        loses no attempt.
        """
        delay = self._retry_delay(name, exc, request)
        if delay is None:
            return
        policy = self._plans[name].retry
        max_retries = policy.retries if policy is not None else None
        raise task.retry(exc=exc, countdown=delay, max_retries=max_retries) from None

    def _retry_while_handling(self, task: Task, name: str, exc: Exception, request: Any) -> None:  # noqa: ANN401
        """``_retry_by_policy`` with ``exc`` being handled, as ``task.retry`` expects.

        It runs in a greenlet of its own, where no exception is being handled;
        ``exc`` keeps the traceback it came with.
        """
        traceback = exc.__traceback__
        try:
            raise exc  # noqa: TRY301 - made the one being handled
        except Exception:  # noqa: BLE001 - ``exc`` itself
            self._retry_by_policy(task, name, exc, request)
        finally:
            exc.__traceback__ = traceback

    @staticmethod
    def _verdict(task: Task, request: Any) -> Verdict:  # noqa: ANN401
        """Tell whether a message that waited may run (see ``_supersede``)."""
        token = publish_token(jobify_header(request))
        if not token:
            return Verdict.RUN
        return verdict(token, current_publish(task.backend, request.id))

    def _retry_delay(self, name: str, exc: Exception, request: Any) -> float | None:  # noqa: ANN401
        plan = self._plans.get(name)
        policy = plan.retry if plan is not None else None
        if policy is None or isinstance(exc, _NEVER_RETRIED):
            return None
        if isinstance(exc, policy.exclude_exceptions):
            return None
        if not isinstance(exc, policy.include_exceptions):
            return None
        attempt = int(request.retries or 0) + 1
        if attempt > policy.retries:
            return None
        return policy.compute_delay(attempt)

    async def _execute(
        self,
        task: Task,
        request: Any,  # noqa: ANN401
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:  # noqa: ANN401
        """Prepare and run the job on the loop (a pool thread waits on this)."""
        return await self._prepare(task, request, name, args, kwargs)

    def _prepare(
        self,
        task: Task,
        request: Any,  # noqa: ANN401
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Coroutine[Any, Any, Any]:
        """Decode the call and build the job's context; return the run to await.

        A function, not a coroutine: the asyncio pool awaits the run straight
        from ``call_async``, one coroutine frame less per job in flight.
        """
        app = self._app
        plan = self._plans.get(name) or self._plan(name)
        codec = self._codec
        bound = decode_call(
            name,
            signature=plan.signature,
            wire=plan.wire,
            hints=plan.hints,
            codec=codec,
            args=args,
            kwargs=kwargs,
            positional=plan.positional,
        )
        configs = app.configs
        tz = configs.tz
        envelope = decode_header(jobify_header(request), codec, tz)
        if envelope.problems:
            logger.warning("Task %s[%s]: %s", name, request.id, "; ".join(envelope.problems))
        builder = plan.route.create_builder(bound)
        tick = envelope.cron
        job = running_job(
            # A cron's run is its cron's job; its Celery task id is its own.
            job_id=tick.job_id if tick is not None else request.id,
            exec_at=_planned_time(request, envelope.exec_at, tz),
            storage=configs.storage,
            unregister_hook=_forget_job,
            done=self._done,
        )
        # Filled as a dict, then wrapped: RequestState's item access is slow.
        state = envelope.request_state
        state["celery_request"] = request
        state["celery_task"] = task
        state["attempt"] = int(request.retries or 0) + 1
        if tick is not None:
            self._bind_cron(job, tick)
            state["cron_run"] = tick.run
        context = build_job_context(
            app=app, builder=builder, job=job, request_state=RequestState(state)
        )
        return self._run_cancellable(builder, context, job, request.id, plan)

    def _bind_cron(self, job: Job[Any], tick: CronTick) -> None:
        """Make ``job.is_cron()`` and ``job.cron_expression`` true to the cron."""
        parser = self._app.configs.cron_factory(tick.expression)
        job.bind_cron_context(
            CronContext(
                job=job,
                cron=Cron(tick.expression),
                cron_parser=parser,
                offset=job.exec_at,
                run_count=tick.run - 1,
            )
        )

    async def _run_cancellable(
        self,
        builder: Any,  # noqa: ANN401
        context: JobContext,
        job: Job[Any],
        task_id: str,
        plan: _Plan,
    ) -> Any:  # noqa: ANN401
        """Run the inner chain; return its result as it goes on the wire.

        A REVOKED state seen meanwhile cancels it. The job's own result
        channel is followed only once it has run for ``_CANCEL_WATCH_AFTER``
        seconds: short jobs cost nothing extra.
        """
        loop = asyncio.get_running_loop()
        running = asyncio.current_task()
        watch = _CancelWatch(running, task_id, loop.time())
        long_running = self._long_running
        long_running.add(watch, loop)
        pool_job = current_pool_job()
        if pool_job is not None:
            pool_job.task = running
        try:
            result = await run_inner_chain(builder, context)
        except asyncio.CancelledError:
            if watch.requested:
                job.status = JobStatus.CANCELLED
                _cancel_handled(running)
                # Its producer stored REVOKED already: store nothing over it.
                raise Ignore from None
            if pool_job is not None and pool_job.ending is not None:
                _cancel_handled(running)
                raise _ended_by_pool(pool_job, job) from None
            raise
        except JobTimeoutError as exc:
            job.set_exception(exc, status=JobStatus.TIMEOUT)
            if isinstance(exc, RemoteJobTimeoutError):
                raise
            raise RemoteJobTimeoutError(exc.job_id, exc.timeout) from exc
        except Exception as exc:
            job.set_exception(exc, status=JobStatus.FAILED)
            raise
        finally:
            # In the asyncio pool the task goes on (to store the outcome): a
            # revoke or an ending from now on must not cancel that.
            watch.task = None
            if pool_job is not None:
                pool_job.task = None
            long_running.discard(watch)
            if watch.following:
                self._unwatch(watch)
        job.set_result(result, status=JobStatus.SUCCESS)
        dumped = self._codec.dump(result, plan.result_type)
        ensure_json(dumped, plan.result_where)
        return dumped

    def _watch(self, watch: _CancelWatch) -> None:
        watcher = self._session_of().watcher
        if watcher is not None:
            watcher.watch(watch.task_id, watch)
            watch.following = True

    def _unwatch(self, watch: _CancelWatch) -> None:
        watcher = self._session_of().watcher
        if watcher is not None:
            watcher.forget(watch.task_id, watch)

    def _plan(self, name: str) -> _Plan:
        route = route_by_name(self._app, name)
        if route is None:
            msg = (
                f"Celery task {name!r} has no Jobify route in the started app; "
                "the worker imported a different version of the task module."
            )
            raise AppBindingError(msg)
        spec = func_spec_of(route)
        signature = spec.signature
        wire = wire_signature(signature, frozenset(spec.inject_params))
        plan = _Plan(
            route=route,
            signature=signature,
            wire=wire,
            positional=positional_names(wire),
            hints=dict(spec.type_params),
            result_type=spec.result_type,
            result_where=f"the result of task {name!r}",
            retry=retry_policy(route.options),
        )
        self._plans[name] = plan
        return plan


def jobify_header(request: Any) -> Any:  # noqa: ANN401
    """Return the Jobify header of a Celery request (``None`` if it has none).

    A worker's request carries a message's custom headers as attributes; an
    eager request (``Task.apply``) keeps them in ``request.headers``.
    """
    header = getattr(request, HEADER_KEY, None)
    if header is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            header = headers.get(HEADER_KEY)
    return header


def _cancel_handled(running: asyncio.Task[Any] | None) -> None:
    """Tell ``running`` that the cancellation it got is handled here.

    In the asyncio pool the job's coroutine runs on the task that goes on to
    store its outcome; a cancellation left counted on it would read as a
    pending one to ``asyncio.timeout`` blocks awaited after.
    """
    if running is not None:
        running.uncancel()


def _ended_by_pool(pool_job: PoolJob, job: Job[Any]) -> BaseException:
    """Return what the asyncio pool's ending of a job means to Celery's tracer."""
    error: BaseException
    ending = pool_job.ending
    if ending is Ending.SOFT_LIMIT:
        job.status = JobStatus.TIMEOUT
        error = SoftTimeLimitExceeded(f"soft time limit exceeded by job {pool_job.task_id}")
    elif ending is Ending.SHUTDOWN:
        # Not run to its end: the message goes back to the queue.
        error = Reject("the worker shut down before the job finished", requeue=True)
    else:
        # A hard limit (Celery stores TimeLimitExceeded) or a terminate (Celery
        # stores REVOKED): nothing of the job's own is stored.
        job.status = JobStatus.TIMEOUT if ending is Ending.HARD_LIMIT else JobStatus.CANCELLED
        error = Ignore()
    return error


def _planned_time(request: Any, header_time: datetime | None, tz: ZoneInfo) -> datetime:  # noqa: ANN401
    """Return the run's planned time: a retry's ETA, else the producer's, else now."""
    eta = parse_time(request.eta, tz)
    if request.retries and eta is not None:
        return eta
    return header_time or eta or datetime.now(tz=tz)
