"""The producer side: the outer chain's last step publishes to Celery.

Jobify runs a push through the app's outer middleware (root first, then the
routers', as in Jobify) and then calls its terminal step. In a bridged app
that step is :class:`Publisher`: it encodes the call, publishes it with
``apply_async`` under the job's id, and lets a result watcher feed the
``Job`` the caller holds. Jobify's own bookkeeping stays true: the job is in
``app.find_job()`` / ``app.get_active_jobs()`` from publish until its result
arrives.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from jobify import JobStatus
from jobify.exceptions import DuplicateJobError

from jobify_celery._codec import HEADER_KEY, encode_call, encode_header
from jobify_celery._cron_feed import feed_for
from jobify_celery._cron_store import cron_store_for
from jobify_celery._eager import EagerHandle, is_eager, outcome, run_eagerly
from jobify_celery._errors import (
    AppBindingError,
    NoResultBackendError,
    PublishError,
    ResultLoadError,
    ResultUnavailableError,
    UnsupportedTriggerError,
)
from jobify_celery._jobify import (
    AtArguments,
    CronArguments,
    RemoteJob,
    finish_job,
    handle_of,
    make_remote,
    runtime_cron_record,
    tracker_of,
)
from jobify_celery._outcome import read_meta
from jobify_celery._senders import Attempt
from jobify_celery._supersede import new_token, record_cancel, record_current_publish

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from zoneinfo import ZoneInfo

    from celery import Celery
    from jobify import Job, Jobify, OuterContext

    from jobify_celery._capture import Capture, Outgoing
    from jobify_celery._codec import ValueCodec
    from jobify_celery._results import Watcher
    from jobify_celery._senders import Sender

T = TypeVar("T")

__all__ = ("ProducerSession", "Publisher", "ResultHandle")

logger = logging.getLogger("jobify_celery.producer")


class ProducerSession:
    """What a started app needs to publish on one loop: capture, sender, result watcher."""

    __slots__ = (
        "_make_sender",
        "_sender",
        "broker",
        "capture",
        "loop",
        "no_backend_reason",
        "publish_timeout",
        "watcher",
    )

    def __init__(  # noqa: PLR0913
        self,
        loop: asyncio.AbstractEventLoop,
        watcher: Watcher | None,
        no_backend_reason: str,
        *,
        capture: Capture,
        make_sender: Callable[[], Sender],
        publish_timeout: float,
        broker: str,
    ) -> None:
        self.loop = loop
        self.watcher = watcher
        self.no_backend_reason = no_backend_reason
        self.capture = capture
        self.publish_timeout = publish_timeout
        #: The broker's URL, password hidden, for error messages.
        self.broker = broker
        self._make_sender = make_sender
        self._sender: Sender | None = None

    @property
    def sender(self) -> Sender:
        """The session's sender, picked at the first push (where it runs decides)."""
        sender = self._sender
        if sender is None:
            sender = self._sender = self._make_sender()
        return sender

    async def off_loop(self, job_id: str, what: str, call: Callable[[], T]) -> T:
        """Run a blocking backend or broker call on a thread, within the publish bound."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                return await asyncio.to_thread(call)
        except TimeoutError:
            reason = f"{what} got no answer within {self.publish_timeout:g} s (publish_timeout)"
            raise PublishError(job_id, self.broker, reason, maybe_sent=True) from None

    def abandon_pending(self, app: Jobify) -> None:
        """Tell every job still awaited that its result will not reach this producer.

        Called when the app shuts down: each such job keeps its status
        (SCHEDULED or RUNNING, as last seen) and ``await job`` raises
        ``ResultUnavailableError``; the job itself still runs on a worker.
        """
        for job in list(tracker_of(app).pending_jobs.values()):
            handle = handle_of(job)
            if isinstance(handle, ResultHandle):
                handle.lose("this producer stopped following it when its Jobify app shut down")

    async def close(self, grace: float) -> None:
        """Stop following results and publishing, within ``grace`` seconds."""
        closing = []
        if self.watcher is not None:
            closing.append(self.watcher.close(grace))
        if self._sender is not None:
            closing.append(self._sender.close(grace))
        await asyncio.gather(*closing)


class ResultHandle:
    """A published job's handle: Jobify cancels it, ``RemoteJob`` revokes it.

    A ``replace`` publishes the job again under the same id; the handle
    stays the job's, and ``_supersede`` records which publish is current.
    """

    __slots__ = ("_celery_app", "_session", "eta", "follower", "task_id", "token")

    def __init__(
        self,
        celery_app: Celery,
        session: ProducerSession,
        task_id: str,
        eta: datetime | None,
    ) -> None:
        self._celery_app = celery_app
        self._session = session
        self.task_id = task_id
        #: When the current publish is due (None: at once).
        self.eta = eta
        #: The current publish's token (see _supersede).
        self.token = ""
        self.follower: JobFollower | None = None

    def cancel(self) -> None:
        """Stop following the result (Jobify calls this on cancel and shutdown)."""
        if self._session.watcher is not None and self.follower is not None:
            self._session.watcher.forget(self.task_id, self.follower)

    def lose(self, reason: str) -> None:
        """Stop following the result for good: ``await job`` raises, naming ``reason``."""
        follower = self.follower
        if follower is not None:
            self.cancel()
            follower.on_lost(reason)

    async def revoke(self, *, terminate: bool = False) -> None:
        """Tell every worker not to run the job, and record it in the backend.

        ``terminate=True`` also kills the pool process running it (prefork
        only): the one way to stop a synchronous function mid-run. A running
        async function is cancelled cooperatively in any case: its worker
        follows the job's state and cancels it when it turns REVOKED.

        The cancel is also recorded in the result store (``_supersede``), so a
        worker that was not running when the revoke went out (one restarted
        before the job's ETA, or before a retry's countdown ends) skips it too.
        """
        celery_app, task_id, eta = self._celery_app, self.task_id, self.eta
        following = self._session.watcher is not None

        def revoke() -> None:
            record_cancel(celery_app.backend, task_id, _seconds_until(eta))
            celery_app.control.revoke(task_id, terminate=terminate, signal="SIGTERM")
            if following:
                celery_app.backend.mark_as_revoked(task_id, reason="cancelled by its producer")

        # Broker and backend calls block: a thread does them, within the bound.
        await self._session.off_loop(task_id, "the cancel", revoke)

    def check_waitable(self) -> None:
        """Raise instead of letting ``await job`` hang with no result backend."""
        if self._session.watcher is None:
            raise NoResultBackendError(self._session.no_backend_reason)


class CronHandle:
    """A run-time cron's handle: its runs are beat's; cancel deletes it.

    ``job.cancel()`` (Jobify's) deletes the schedule from the storage; the
    handle then announces the change on the cron feed, so beat stops firing
    it within a tick.
    """

    __slots__ = ("_celery_app", "_session", "job_id")

    def __init__(self, session: ProducerSession, celery_app: Celery) -> None:
        self._session = session
        self._celery_app = celery_app
        self.job_id = ""

    def cancel(self) -> None:
        """Nothing runs locally: nothing to stop here."""

    async def revoke(self, *, terminate: bool = False) -> None:
        """Leave runs already published to finish."""
        del terminate

    async def cancelled(self) -> None:
        """Tell beat, once the storage has forgotten the cron."""
        if self.job_id:
            await announce_cron_change(self._session, self._celery_app, self.job_id)

    def check_waitable(self) -> None:
        """Refuse: a cron has no single result to await."""
        msg = (
            "A cron job runs on workers once per tick and has no single result to "
            "await; follow its runs through your task (or the result backend)."
        )
        raise TypeError(msg)


async def announce_cron_change(session: ProducerSession, celery_app: Celery, job_id: str) -> None:
    """Put a changed cron on the feed; a failure only delays beat (it rereads all later)."""
    feed = feed_for(celery_app)
    if feed is None:
        return
    try:
        what = "announcing the cron change"
        await session.off_loop(job_id, what, lambda: feed.announce([job_id]))
    except Exception as exc:  # noqa: BLE001 - the storage has the change; beat finds it
        logger.warning(
            "Cron %r is stored, but beat could not be told (%s: %s); it follows within "
            "its full reread of the storage",
            job_id,
            type(exc).__name__,
            exc,
        )


class Publisher:
    """The terminal step of a bridged app's outer middleware chain."""

    __slots__ = ("_app", "_celery_app", "_codec", "_pending", "_session_of")

    def __init__(
        self,
        *,
        app: Jobify,
        celery_app: Celery,
        codec: ValueCodec,
        session_of: Callable[[], ProducerSession],
    ) -> None:
        self._app = app
        self._celery_app = celery_app
        self._codec = codec
        self._session_of = session_of
        #: Work finishing in the background (kept referenced until it ends).
        self._pending: set[asyncio.Future[Any]] = set()

    async def __call__(self, context: OuterContext) -> asyncio.Handle:
        """Publish the job the outer chain let through."""
        trigger = context.trigger
        if isinstance(trigger, CronArguments):
            return await self._schedule_cron(context, trigger)
        name = context.schedule_builder.name
        task = self._celery_app.tasks.get(name)
        if task is None:
            msg = (
                f"Jobify route {name!r} has no Celery task. Declare every @app.task "
                "before the Celery app is finalized (before anything reads "
                "celery_app.tasks or a worker starts)."
            )
            raise AppBindingError(msg)
        job = context.job
        codec = self._codec
        spec = context.func_spec
        args, kwargs = encode_call(
            name, context.runnable.bound, spec.type_params, codec, spec.inject_params
        )
        eta = _eta_of(trigger, job.exec_at, self._app.configs.tz)
        session: ProducerSession = self._session_of()
        previous = handle_of(job)
        # replace=True of a job this producer published: same id, new time.
        replaced = (
            previous if isinstance(previous, ResultHandle) and isinstance(job, RemoteJob) else None
        )
        # A message that waits (an ETA, or a retry's countdown) is checked
        # against the current publish before it runs (see _supersede).
        token = new_token()
        headers = {
            HEADER_KEY: encode_header(
                exec_at=job.exec_at,
                request_state=context.request_state,
                codec=codec,
                publish=token,
            )
        }
        if is_eager(self._celery_app):
            return await self._run_eagerly(job, task, args, kwargs, headers, spec.result_type)
        # Celery builds the message here (routing, signals); nothing is sent yet.
        messages = session.capture.messages(
            task, args, kwargs, task_id=job.id, eta=eta, headers=headers
        )
        if replaced is not None:
            await self._replace(session, replaced, messages, token, eta)
            job.status = JobStatus.SCHEDULED
            return cast("asyncio.Handle", replaced)
        # Tracked and followed before anything is sent: the subscription to
        # the job's result leaves ahead of its message (see _results).
        handle = self._track(job, session, name, spec.result_type, eta, token)
        attempt = Attempt()
        try:
            await session.sender.send(messages, job.id, attempt)
        except asyncio.CancelledError:
            if attempt.withdraw():
                self._untrack(job, handle)  # nothing left this process
            elif attempt.task is not None:
                # The message may be out: the job stays findable (app.find_job)
                # and fails if its publish does.
                attempt.task.add_done_callback(
                    functools.partial(self._on_late_publish, job, handle)
                )
            raise
        except BaseException:
            self._untrack(job, handle)
            raise
        return cast("asyncio.Handle", handle)

    async def _run_eagerly(  # noqa: PLR0913, PLR0917
        self,
        job: Job[Any],
        task: Any,  # noqa: ANN401 - the route's Celery task
        args: list[Any],
        kwargs: dict[str, Any],
        headers: dict[str, Any],
        result_type: Any,  # noqa: ANN401
    ) -> asyncio.Handle:
        """``task_always_eager``: run the job here and now (see ``_eager``)."""
        handle = EagerHandle()
        tracker_of(self._app).register_job(job)
        job.bind_handle(cast("asyncio.Handle", handle))
        remote = make_remote(job)
        remote.status = JobStatus.RUNNING
        try:
            result = await run_eagerly(task, args, kwargs, task_id=job.id, headers=headers)
        except BaseException:
            finish_job(self._app, job)
            raise
        ended = outcome(result, self._codec, result_type, task.name)
        if ended.status is JobStatus.SUCCESS:
            remote.set_result(ended.value, status=JobStatus.SUCCESS)
        elif ended.status is JobStatus.CANCELLED:
            remote.status = JobStatus.CANCELLED
        else:
            remote.set_exception(cast("Exception", ended.error), status=ended.status)
        finish_job(self._app, job)
        return cast("asyncio.Handle", handle)

    async def _replace(
        self,
        session: ProducerSession,
        handle: ResultHandle,
        messages: list[Outgoing],
        token: str,
        eta: datetime | None,
    ) -> None:
        """Publish a pending job again for its new time; the old publish is skipped.

        The new publish is recorded as current before it is sent; if the send
        fails, the old one is made current again, so the job still runs at its
        old time (and the caller gets the ``PublishError``).
        """
        backend = self._celery_app.backend
        task_id, previous = handle.task_id, handle.token

        def record(current: str, when: datetime | None) -> None:
            record_current_publish(backend, task_id, current, _seconds_until(when))

        what = "recording the replace in the result backend"
        await session.off_loop(task_id, what, functools.partial(record, token, eta))
        attempt = Attempt()
        restore = functools.partial(record, previous, handle.eta)
        try:
            await session.sender.send(messages, task_id, attempt)
        except PublishError:
            await session.off_loop(task_id, "restoring the replaced publish", restore)
            raise
        except asyncio.CancelledError:
            if attempt.withdraw():
                # Not sent: the old publish stays the one that runs.
                self._background(session.off_loop(task_id, "restoring a publish", restore))
            raise
        handle.eta, handle.token = eta, token

    def _track(  # noqa: PLR0913, PLR0917
        self,
        job: Job[Any],
        session: ProducerSession,
        name: str,
        result_type: Any,  # noqa: ANN401
        eta: datetime | None,
        token: str,
    ) -> ResultHandle:
        """Make a job the caller's: tracked, followed, cancellable."""
        handle = ResultHandle(self._celery_app, session, job.id, eta)
        handle.token = token
        tracker_of(self._app).register_job(job)
        job.bind_handle(cast("asyncio.Handle", handle))
        remote = make_remote(job)
        remote.status = JobStatus.SCHEDULED
        if session.watcher is not None:
            handle.follower = JobFollower(self, remote, result_type, name)
            session.watcher.watch(job.id, handle.follower, unpublished=True)
        return handle

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Finish ``work`` although its caller was cancelled; log how it ended badly."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(_log_failure)

    def _untrack(self, job: Job[Any], handle: ResultHandle) -> None:
        """Undo ``_track`` for a job that was not published: it never existed."""
        handle.cancel()
        finish_job(self._app, job)

    def _on_late_publish(
        self, job: Job[Any], handle: ResultHandle, attempt: asyncio.Future[None]
    ) -> None:
        """Fail the job if the publish its pusher stopped waiting for fails."""
        error = None if attempt.cancelled() else attempt.exception()
        if error is None or job.is_done():
            return
        handle.cancel()
        job.set_exception(cast("Exception", error), status=JobStatus.FAILED)
        finish_job(self._app, job)

    async def _schedule_cron(self, context: OuterContext, trigger: CronArguments) -> asyncio.Handle:
        """Store a run-time cron where beat reads it; beat fires its runs.

        As in Jobify, an id already scheduled (by any producer sharing the
        storage) is refused unless ``replace=True``. With a storage the
        bridge knows (``_cron_store``) that costs one statement, and two
        producers racing on one id cannot both win; the change is then
        announced on the cron feed, so beat follows it within a tick.
        """
        del trigger
        job = context.job
        if not context.is_persist:
            msg = (
                f"cron {job.id!r}: a cron added at run time is kept in the app's Jobify "
                "storage for Celery beat to fire, and this app has none "
                "(Jobify(storage=False)) or the route is durable=False. Give the app a "
                "storage that beat shares, or declare the cron with @app.task(cron=...)."
            )
            raise UnsupportedTriggerError(msg)
        storage = self._app.configs.storage
        store = cron_store_for(storage)
        if store is None:
            await self._schedule_cron_slowly(context)
        else:
            record = runtime_cron_record(self._app, context)
            if context.is_replace:
                await storage.add_schedule(record)
            elif not await store.add_if_absent(record):
                raise DuplicateJobError(job.id)
        session = self._session_of()
        await announce_cron_change(session, self._celery_app, job.id)
        handle = handle_of(job)
        if isinstance(handle, CronHandle) and isinstance(job, RemoteJob):
            return cast("asyncio.Handle", handle)
        handle = CronHandle(session, self._celery_app)
        handle.job_id = job.id
        tracker_of(self._app).register_job(job)
        job.bind_handle(cast("asyncio.Handle", handle))
        make_remote(job).status = JobStatus.SCHEDULED
        return cast("asyncio.Handle", handle)

    async def _schedule_cron_slowly(self, context: OuterContext) -> None:
        """Store a cron in a storage the bridge does not know: Jobify's way, reading all."""
        job = context.job
        if not context.is_replace:
            stored = await self._app.configs.storage.get_schedules()
            if any(record.job_id == job.id for record in stored):
                raise DuplicateJobError(job.id)
        await context.persist_job_hook(job.id, job.exec_at, context.trigger)

    def _on_meta(self, job: RemoteJob, result_type: Any, name: str, meta: dict[str, Any]) -> bool:  # noqa: ANN401
        outcome = read_meta(meta)
        if job.is_done() or job.status is JobStatus.CANCELLED:
            return True
        if not outcome.done:
            if outcome.status is not None:
                job.status = outcome.status
            return False
        if outcome.status is JobStatus.SUCCESS:
            try:
                value = self._codec.load(outcome.value, result_type)
            except Exception as exc:  # noqa: BLE001 - whatever a loader raises, the value is bad
                error = ResultLoadError(
                    f"the result of task {name!r} does not load as its return "
                    f"annotation: {type(exc).__name__}: {exc}"
                )
                job.set_exception(error, status=JobStatus.FAILED)
            else:
                job.set_result(value, status=JobStatus.SUCCESS)
        elif outcome.status is JobStatus.CANCELLED:
            job.status = JobStatus.CANCELLED
        else:
            error_status = outcome.status or JobStatus.FAILED
            job.set_exception(cast("Exception", outcome.error), status=error_status)
        finish_job(self._app, job)
        return True

    def _on_lost(self, job: RemoteJob, reason: str) -> None:
        if job.is_done():
            return
        job.exception = ResultUnavailableError(job.id, reason)
        finish_job(self._app, job)


class JobFollower:
    """Hands a published job the states its worker stores (a ``Follower``)."""

    __slots__ = ("_job", "_name", "_publisher", "_result_type")

    def __init__(
        self,
        publisher: Publisher,
        job: RemoteJob,
        result_type: Any,  # noqa: ANN401
        name: str,
    ) -> None:
        self._publisher = publisher
        self._job = job
        self._result_type = result_type
        self._name = name

    def on_meta(self, meta: dict[str, Any]) -> bool:
        """Feed the job one stored state; ``True`` once it has ended."""
        return self._publisher._on_meta(self._job, self._result_type, self._name, meta)  # noqa: SLF001

    def on_lost(self, reason: str) -> None:
        """End the job's wait: its result will not reach this producer."""
        self._publisher._on_lost(self._job, reason)  # noqa: SLF001


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("Background publish work failed: %s", error, exc_info=error)


def _seconds_until(eta: datetime | None) -> float:
    return (eta - datetime.now(tz=eta.tzinfo)).total_seconds() if eta else 0.0


def _eta_of(trigger: object, exec_at: datetime, tz: ZoneInfo) -> datetime | None:
    """Return the ETA for a future ``at``/``delay`` job, ``None`` to run now."""
    if not isinstance(trigger, AtArguments):
        return None
    planned = exec_at if exec_at.tzinfo is not None else exec_at.replace(tzinfo=tz)
    return planned if planned > datetime.now(tz=tz) else None
