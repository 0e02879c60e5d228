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

import functools
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from jobify import JobStatus
from jobify.exceptions import DuplicateJobError

from jobify_celery._codec import HEADER_KEY, encode_call, encode_header
from jobify_celery._coerce import CoercionError
from jobify_celery._errors import (
    AppBindingError,
    NoResultBackendError,
    ResultLoadError,
    UnsupportedTriggerError,
)
from jobify_celery._jobify import (
    AtArguments,
    CronArguments,
    RemoteJob,
    finish_job,
    handle_of,
    make_remote,
    tracker_of,
)
from jobify_celery._outcome import read_meta
from jobify_celery._send import send_followed
from jobify_celery._supersede import new_token, record_cancel, record_current_publish

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from zoneinfo import ZoneInfo

    from celery import Celery
    from jobify import Jobify, OuterContext

    from jobify_celery._codec import ValueCodec
    from jobify_celery._results import MetaCallback, Watcher

__all__ = ("ProducerSession", "Publisher", "ResultHandle")

logger = logging.getLogger("jobify_celery.producer")


class ProducerSession:
    """What a started app needs to publish on one loop: the result watcher."""

    __slots__ = ("loop", "no_backend_reason", "watcher")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        watcher: Watcher | None,
        no_backend_reason: str,
    ) -> None:
        self.loop = loop
        self.watcher = watcher
        self.no_backend_reason = no_backend_reason

    async def close(self) -> None:
        """Stop following results; jobs still pending keep their status."""
        if self.watcher is not None:
            await self.watcher.close()


class ResultHandle:
    """A published job's handle: Jobify cancels it, ``RemoteJob`` revokes it.

    A ``replace`` publishes the job again under the same id; the handle
    stays the job's, and ``_supersede`` records which publish is current.
    """

    __slots__ = ("_celery_app", "_session", "eta", "follower", "task_id")

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
        self.follower: MetaCallback | None = None

    def cancel(self) -> None:
        """Stop following the result (Jobify calls this on cancel and shutdown)."""
        if self._session.watcher is not None and self.follower is not None:
            self._session.watcher.forget(self.task_id, self.follower)

    def revoke(self, *, terminate: bool = False) -> None:
        """Tell every worker not to run the job, and record it in the backend.

        ``terminate=True`` also kills the pool process running it (prefork
        only): the one way to stop a synchronous function mid-run. A running
        async function is cancelled cooperatively in any case: its worker
        follows the job's state and cancels it when it turns REVOKED.

        The cancel is also recorded in the result store (``_supersede``), so a
        worker that was not running when the revoke went out (one restarted
        before the job's ETA, or before a retry's countdown ends) skips it too.
        """
        record_cancel(self._celery_app.backend, self.task_id, _seconds_until(self.eta))
        control = self._celery_app.control
        control.revoke(self.task_id, terminate=terminate, signal="SIGTERM")
        if self._session.watcher is not None:
            self._celery_app.backend.mark_as_revoked(
                self.task_id, reason="cancelled by its producer"
            )

    def check_waitable(self) -> None:
        """Raise instead of letting ``await job`` hang with no result backend."""
        if self._session.watcher is None:
            raise NoResultBackendError(self._session.no_backend_reason)


class CronHandle:
    """A run-time cron's handle: its runs are beat's; cancel deletes it.

    ``job.cancel()`` (Jobify's) deletes the schedule from the storage, and
    beat stops firing it at its next read (within a second).
    """

    __slots__ = ()

    def cancel(self) -> None:
        """Nothing runs locally: nothing to stop here."""

    def revoke(self, *, terminate: bool = False) -> None:
        """Leave runs already published to finish."""
        del terminate

    def check_waitable(self) -> None:
        """Refuse: a cron has no single result to await."""
        msg = (
            "A cron job runs on workers once per tick and has no single result to "
            "await; follow its runs through your task (or the result backend)."
        )
        raise TypeError(msg)


class Publisher:
    """The terminal step of a bridged app's outer middleware chain."""

    __slots__ = ("_app", "_celery_app", "_codec", "_session_of")

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
        if replaced is not None:
            # Record the new publish as current before sending it.
            record_current_publish(self._celery_app.backend, job.id, token, _seconds_until(eta))
        send_followed(task, args, kwargs, task_id=job.id, eta=eta, headers=headers)
        if replaced is not None:
            replaced.eta = eta
            job.status = JobStatus.SCHEDULED
            return cast("asyncio.Handle", replaced)

        handle = ResultHandle(self._celery_app, session, job.id, eta)
        tracker_of(self._app).register_job(job)
        job.bind_handle(cast("asyncio.Handle", handle))
        remote = make_remote(job)
        remote.status = JobStatus.SCHEDULED
        if session.watcher is not None:
            handle.follower = functools.partial(self._on_meta, remote, spec.result_type, name)
            session.watcher.watch(job.id, handle.follower)
        return cast("asyncio.Handle", handle)

    async def _schedule_cron(self, context: OuterContext, trigger: CronArguments) -> asyncio.Handle:
        """Store a run-time cron where beat reads it; beat fires its runs.

        As in Jobify, an id already scheduled (by any producer sharing the
        storage) is refused unless ``replace=True``.
        """
        job = context.job
        if not context.is_persist:
            msg = (
                f"cron {job.id!r}: a cron added at run time is kept in the app's Jobify "
                "storage for Celery beat to fire, and this app has none "
                "(Jobify(storage=False)) or the route is durable=False. Give the app a "
                "storage that beat shares, or declare the cron with @app.task(cron=...)."
            )
            raise UnsupportedTriggerError(msg)
        if not context.is_replace:
            stored = await self._app.configs.storage.get_schedules()
            if any(record.job_id == job.id for record in stored):
                raise DuplicateJobError(job.id)
        await context.persist_job_hook(job.id, job.exec_at, trigger)
        handle = handle_of(job)
        if isinstance(handle, CronHandle) and isinstance(job, RemoteJob):
            return cast("asyncio.Handle", handle)
        handle = CronHandle()
        tracker_of(self._app).register_job(job)
        job.bind_handle(cast("asyncio.Handle", handle))
        make_remote(job).status = JobStatus.SCHEDULED
        return cast("asyncio.Handle", handle)

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
            except (CoercionError, TypeError, ValueError, KeyError) as exc:
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


def _seconds_until(eta: datetime | None) -> float:
    return (eta - datetime.now(tz=eta.tzinfo)).total_seconds() if eta else 0.0


def _eta_of(trigger: object, exec_at: datetime, tz: ZoneInfo) -> datetime | None:
    """Return the ETA for a future ``at``/``delay`` job, ``None`` to run now."""
    if not isinstance(trigger, AtArguments):
        return None
    planned = exec_at if exec_at.tzinfo is not None else exec_at.replace(tzinfo=tz)
    return planned if planned > datetime.now(tz=tz) else None
