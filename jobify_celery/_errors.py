"""Errors jobify-celery raises, each saying what went wrong and what to do."""

from __future__ import annotations

from jobify.exceptions import JobTimeoutError

__all__ = (
    "AppBindingError",
    "ArgumentLoadError",
    "NoResultBackendError",
    "PublishError",
    "RemoteJobTimeoutError",
    "ResultLoadError",
    "ResultUnavailableError",
    "UnsupportedTriggerError",
)


class AppBindingError(RuntimeError):
    """A Jobify app and a Celery app cannot be bound as asked."""


class ArgumentLoadError(TypeError):
    """A Celery message's arguments do not fit the task's function.

    Raised in the worker before any middleware runs; the task fails, the
    message is acknowledged and the failure is stored in the result backend.
    The message names the task and, where one is to blame, the parameter.
    """


class ResultLoadError(TypeError):
    """A worker's stored result does not load as the task's return type."""


class NoResultBackendError(RuntimeError):
    """A job's result is awaited but nothing can ever deliver it."""


class PublishError(RuntimeError):
    """A push could not be handed to the broker within its bound.

    Raised by ``push()``/``delay()``/``at()`` (through the outer middleware)
    when the broker refuses the message, cannot be reached, or does not
    confirm it within ``JobifyCelery(..., publish_timeout=...)`` seconds.
    ``maybe_sent`` is false when the message certainly never left this
    process; when true, the broker may have it after all (it was written but
    not confirmed), and the job may run. ``refused`` is true when the broker
    answered and turned the message down (an unknown exchange, no route
    with confirms): sending it again would fail the same way. Nothing is
    tracked for the job in this producer either way: ``job_id`` names it for
    a retry or a look-up.
    """

    def __init__(
        self, job_id: str, broker: str, reason: str, *, maybe_sent: bool, refused: bool = False
    ) -> None:
        outcome = "it may or may not have reached the broker" if maybe_sent else "nothing was sent"
        super().__init__(f"job {job_id!r} was not published to {broker}: {reason} ({outcome})")
        self.job_id = job_id
        self.broker = broker
        self.reason = reason
        self.maybe_sent = maybe_sent
        self.refused = refused


class ResultUnavailableError(RuntimeError):
    """A producer can no longer tell how a job ended.

    The job itself is not affected: it runs (or ran) on a worker, and its
    result is kept in the result backend under its id, where
    ``AsyncResult(job_id)`` reads it. Raised by ``await job`` and
    ``job.result()`` for a job that was pending when the app shut down, or
    whose result backend stayed unreachable longer than the bound
    (``JobifyCelery(..., backend_outage_timeout=...)``).
    """

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(
            f"job {job_id!r}: {reason}. The job itself runs (or ran) on a worker "
            f"and its result is kept in the result backend: read it with "
            f"AsyncResult({job_id!r}) from a running Celery app."
        )
        self.job_id = job_id
        self.reason = reason


class UnsupportedTriggerError(NotImplementedError):
    """A Jobify trigger this version of jobify-celery cannot run yet."""


class RemoteJobTimeoutError(JobTimeoutError):
    """Jobify's ``JobTimeoutError`` in a form that crosses Celery intact.

    Celery stores an exception as its type and ``args`` and rebuilds it with
    ``cls(*args)``; Jobify's error keeps only its message in ``args``, so the
    worker raises this subclass instead, whose ``args`` are its constructor's.
    ``isinstance(exc, JobTimeoutError)`` holds on both sides.
    """

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(job_id=job_id, timeout=timeout)
        self.args = (job_id, timeout)

    def __str__(self) -> str:
        return (
            f"job_id: {self.job_id} exceeded timeout of {self.timeout} seconds. "
            "Job execution was interrupted."
        )
