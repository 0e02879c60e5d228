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
  ``celery_request`` (the Celery request, ``task.request``) and
  ``celery_task`` (the bound Celery task);
* ``state``, ``route_options``, ``jobify_config``, ``app`` and a working
  ``schedule_builder``, as Jobify gives them.

The route's inner chain (user middleware, Jobify's retry, exception handlers
and timeout) runs around the function; whatever it returns is the task's
result, dumped for the return annotation. Celery's own task signals fire
around the whole call as for any Celery task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobify import INJECT, Job, JobStatus, RequestState
from jobify.exceptions import JobTimeoutError

from jobify_celery._codec import (
    HEADER_KEY,
    decode_call,
    decode_header,
    ensure_json,
    parse_time,
    wire_signature,
)
from jobify_celery._errors import AppBindingError, RemoteJobTimeoutError
from jobify_celery._jobify import (
    build_job_context,
    func_spec_of,
    route_by_name,
    run_inner_chain,
)

if TYPE_CHECKING:
    import inspect

    from celery import Task
    from jobify import Jobify

    from jobify_celery._codec import ValueCodec
    from jobify_celery._runtime import ProcessRuntime

__all__ = ("Executor", "injected_names")


def injected_names(signature: inspect.Signature) -> frozenset[str]:
    """Return the parameters Jobify fills by injection (default ``INJECT``)."""
    return frozenset(n for n, p in signature.parameters.items() if p.default is INJECT)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a route needs per call, worked out once per process."""

    signature: inspect.Signature
    wire: inspect.Signature
    hints: dict[str, Any]
    result_type: Any


def _forget_job(_job_id: str) -> None:
    """Worker-side jobs are not tracked: the producer's handle is the job."""


class Executor:
    """Runs one Celery invocation of a Jobify route on the process's loop."""

    __slots__ = ("_app", "_codec", "_plans", "_runtime")

    def __init__(self, *, app: Jobify, runtime: ProcessRuntime, codec: ValueCodec) -> None:
        self._app = app
        self._runtime = runtime
        self._codec = codec
        self._plans: dict[str, _Plan] = {}

    def __call__(self, task: Task, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:  # noqa: ANN401
        """Run the route ``name`` for the Celery ``task`` now executing."""
        # task.request lives on the pool thread's request stack: read it here.
        request = task.request
        return self._runtime.run(self._execute(task, request, name, args, kwargs))

    async def _execute(
        self,
        task: Task,
        request: Any,  # noqa: ANN401
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:  # noqa: ANN401
        app = self._app
        route = route_by_name(app, name)
        if route is None:
            msg = (
                f"Celery task {name!r} has no Jobify route in the started app; "
                "the worker imported a different version of the task module."
            )
            raise AppBindingError(msg)
        plan = self._plans.get(name) or self._plan(name, route)
        codec = self._codec
        bound = decode_call(
            name,
            signature=plan.signature,
            wire=plan.wire,
            hints=plan.hints,
            codec=codec,
            args=args,
            kwargs=kwargs,
        )
        tz = app.configs.tz
        envelope = decode_header(getattr(request, HEADER_KEY, None), codec, tz)
        exec_at = envelope.exec_at or parse_time(request.eta, tz) or datetime.now(tz=tz)
        builder = route.create_builder(bound)
        job: Job[Any] = Job(
            job_id=request.id,
            exec_at=exec_at,
            storage=app.configs.storage,
            unregister_hook=_forget_job,
            job_status=JobStatus.RUNNING,
        )
        request_state = RequestState(envelope.request_state)
        request_state["celery_request"] = request
        request_state["celery_task"] = task
        context = build_job_context(app=app, builder=builder, job=job, request_state=request_state)
        try:
            result = await run_inner_chain(builder, context)
        except JobTimeoutError as exc:
            job.set_exception(exc, status=JobStatus.TIMEOUT)
            if isinstance(exc, RemoteJobTimeoutError):
                raise
            raise RemoteJobTimeoutError(exc.job_id, exc.timeout) from exc
        except Exception as exc:
            job.set_exception(exc, status=JobStatus.FAILED)
            raise
        job.set_result(result, status=JobStatus.SUCCESS)
        dumped = codec.dump(result, plan.result_type)
        ensure_json(dumped, f"the result of task {name!r}")
        return dumped

    def _plan(self, name: str, route: Any) -> _Plan:  # noqa: ANN401
        spec = func_spec_of(route)
        signature = spec.signature
        plan = _Plan(
            signature=signature,
            wire=wire_signature(signature, frozenset(spec.inject_params)),
            hints=dict(spec.type_params),
            result_type=spec.result_type,
        )
        self._plans[name] = plan
        return plan
