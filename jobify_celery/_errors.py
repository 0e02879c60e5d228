"""Errors jobify-celery raises, each saying what went wrong and what to do."""

from __future__ import annotations

__all__ = (
    "AppBindingError",
    "ArgumentLoadError",
    "NoResultBackendError",
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
