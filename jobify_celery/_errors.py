"""Errors jobify-celery raises, each saying what went wrong and what to do."""

from __future__ import annotations

from jobify.exceptions import JobTimeoutError

__all__ = (
    "AppBindingError",
    "ArgumentLoadError",
    "NoResultBackendError",
    "RemoteJobTimeoutError",
    "ResultLoadError",
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
