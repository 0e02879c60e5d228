"""Eager mode (``task_always_eager``): a push runs its job in the producer's process.

Celery's usual unit-test setting makes ``apply_async`` run the task at once,
in the caller's thread, and return an ``EagerResult``. A push does the
same, without blocking the event loop: the outer middleware ran as for any
push, then Celery's ``Task.apply`` (its tracer, signals and eager request)
runs the job on a thread, whose coroutine goes back to the app's loop as in a
threads-pool worker, through the whole inner chain. The push returns once the
job has ended, and ``await job`` gives its result or raises its error, as
after a worker's run. As in Celery, an ETA or countdown does not delay an
eager job, and nothing reaches the broker or the result backend (unless
``task_store_eager_result``).

``outcome`` turns the ``EagerResult`` into what the job's handle receives;
pure, apart from loading the value with the app's codec.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import states
from jobify import JobStatus
from jobify.exceptions import JobTimeoutError

from jobify_celery._errors import ResultLoadError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from celery import Celery, Task
    from celery.result import EagerResult

    from jobify_celery._codec import ValueCodec

__all__ = ("EagerHandle", "EagerOutcome", "is_eager", "outcome", "run_eagerly")


def is_eager(celery_app: Celery) -> bool:
    """Tell whether the app runs tasks eagerly (``task_always_eager``)."""
    return bool(celery_app.conf.task_always_eager)


async def run_eagerly(
    task: Task,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    task_id: str,
    headers: dict[str, Any],
) -> EagerResult:
    """Run ``task`` as Celery's ``apply`` does, on a thread; the loop keeps running.

    The task's coroutine comes back to this loop (the app's), so whatever the
    lifespan opened is used from the loop it belongs to. Errors are kept in
    the result, never raised here (``task_eager_propagates`` does not apply:
    a job's error is the job's, raised by ``await job``).
    """
    return await asyncio.to_thread(
        task.apply, args, kwargs, task_id=task_id, headers=headers, throw=False
    )


@dataclass(frozen=True, slots=True)
class EagerOutcome:
    """How an eager run ended, for the job's handle."""

    status: JobStatus
    value: Any = None
    error: BaseException | None = None


def outcome(result: EagerResult, codec: ValueCodec, result_type: Any, name: str) -> EagerOutcome:  # noqa: ANN401
    """Read an ``EagerResult``: the typed value, or the error and the job's status."""
    state = result.state
    if state == states.SUCCESS:
        try:
            value = codec.load(result.result, result_type)
        except Exception as exc:  # noqa: BLE001 - whatever a loader raises, the value is bad
            load_error = ResultLoadError(
                f"the result of task {name!r} does not load as its return "
                f"annotation: {type(exc).__name__}: {exc}"
            )
            return EagerOutcome(JobStatus.FAILED, error=load_error)
        return EagerOutcome(JobStatus.SUCCESS, value=value)
    if state in {states.IGNORED, states.REVOKED}:
        return EagerOutcome(JobStatus.CANCELLED)
    error = result.result
    if not isinstance(error, BaseException):
        error = RuntimeError(f"task {name!r} ended eagerly in state {state}: {error!r}")
    status = JobStatus.TIMEOUT if isinstance(error, JobTimeoutError) else JobStatus.FAILED
    return EagerOutcome(status, error=error)


class EagerHandle:
    """An eager job's handle: it ran at push time, so there is nothing left to stop."""

    __slots__ = ()

    def cancel(self) -> None:
        """Nothing runs any more."""

    async def revoke(self, *, terminate: bool = False) -> None:
        """Nothing to revoke: the job has ended."""
        del terminate

    def check_waitable(self) -> None:
        """Let ``await job`` through: the outcome is already there."""
