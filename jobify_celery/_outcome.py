"""Read what a worker stored in the result backend as a Jobify outcome.

Pure functions: a stored task meta (as the backend decoded it from JSON)
in, the job's status and value or exception out.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Final

from celery import states
from celery.exceptions import TimeLimitExceeded
from celery.utils.serialization import create_exception_cls
from jobify import JobStatus
from jobify.exceptions import JobTimeoutError

__all__ = ("Outcome", "exception_from_stored", "read_meta")

_WAITING: Final = frozenset({states.PENDING, states.RECEIVED, states.RETRY})


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job's state as the producer should show it.

    ``done`` is true once nothing more will change; then ``status`` is
    SUCCESS (``value`` holds the raw stored result), FAILED or TIMEOUT
    (``error`` holds the rebuilt exception) or CANCELLED.
    """

    status: JobStatus | None
    done: bool
    value: Any = None
    error: BaseException | None = None


def read_meta(meta: Any) -> Outcome:  # noqa: ANN401, PLR0911
    """Map a stored Celery task meta to an ``Outcome``."""
    if not isinstance(meta, dict):
        return Outcome(status=None, done=False)
    state = meta.get("status")
    if state == states.SUCCESS:
        return Outcome(status=JobStatus.SUCCESS, done=True, value=meta.get("result"))
    if state == states.STARTED:
        return Outcome(status=JobStatus.RUNNING, done=False)
    if state == states.REVOKED:
        return Outcome(status=JobStatus.CANCELLED, done=True)
    if state in (states.RETRY, states.PENDING):
        # Waiting for its next attempt, or (a superseded publish was skipped)
        # for the publish that replaced it.
        return Outcome(status=JobStatus.SCHEDULED, done=False)
    if state in _WAITING:
        return Outcome(status=None, done=False)
    if state in states.EXCEPTION_STATES:
        error = exception_from_stored(meta.get("result"))
        timed_out = isinstance(error, (JobTimeoutError, TimeLimitExceeded))
        status = JobStatus.TIMEOUT if timed_out else JobStatus.FAILED
        return Outcome(status=status, done=True, error=error)
    return Outcome(status=None, done=False)


def exception_from_stored(stored: Any) -> BaseException:  # noqa: ANN401
    """Rebuild the worker's exception, keeping its type name and message.

    Celery stores ``{"exc_type", "exc_module", "exc_message"}``. The class
    is looked up only among modules this process has already imported (no
    import is ever triggered by message content) and must be an exception.
    When its constructor does not take the stored arguments back (Jobify's
    ``JobTimeoutError`` is one), the instance is made without calling it, so
    the type survives; an unknown class is recreated by name.
    """
    if isinstance(stored, BaseException):
        return stored
    if not isinstance(stored, dict) or "exc_type" not in stored:
        return RuntimeError(f"the worker stored a failure without details: {stored!r:.200}")
    type_name = str(stored["exc_type"])
    module_name = stored.get("exc_module")
    raw_args = stored.get("exc_message", ())
    args = tuple(raw_args) if isinstance(raw_args, (list, tuple)) else (raw_args,)
    cls = _find_class(module_name, type_name)
    try:
        return cls(*args)
    except Exception:  # noqa: BLE001 - any constructor failure means "build it by hand"
        error = cls.__new__(cls)
        error.args = args
        return error


def _find_class(module_name: Any, type_name: str) -> type[BaseException]:  # noqa: ANN401
    found: Any = sys.modules.get(module_name) if isinstance(module_name, str) else None
    if found is not None:
        for part in type_name.split("."):
            found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    parent_module = module_name if isinstance(module_name, str) else __name__
    made: type[BaseException] = create_exception_cls(type_name.rsplit(".", 1)[-1], parent_module)
    return made
