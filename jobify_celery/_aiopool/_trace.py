"""Celery's task tracer for a Jobify job, as a coroutine: nothing held but the job while it waits.

Celery traces a task in one synchronous function (``celery.app.trace``):
the prerun signal, the STARTED state, the call, then the outcome (result
stored, callbacks and chain sent, success/retry/failure signals, Reject and
Ignore), the postrun signal and the cleanup. Run as it is, in a greenlet,
every job in flight keeps a suspended greenlet (its C stack and its frame
stack, ~10 KiB) for as long as its coroutine waits.

Here the same steps run in the same order, with the same Celery calls, but
the job's coroutine is awaited by the job's own asyncio task, between two
short synchronous stretches: what happens before the call, and what
happens with its outcome. Each stretch runs in a greenlet of its own that
ends with it (``blocking``), so the Celery code in it (a result store, a
publish, a user's signal handler) can still wait on the loop through
``await_only`` as in a job greenlet.

A job takes this path only when nothing would tell the difference: its
task is a Jobify route whose function nobody has wrapped (an APM's
``task.run`` wrapper, a custom ``__call__``), and Celery's deduplication
of redelivered successful tasks is off. Every other job keeps Celery's
own tracer in a greenlet (``_pool``).

Celery's internals used here (``TraceInfo``, ``report_internal_error``,
the task stack) are those of ``celery>=5.7,<6``, the range the package
pins; ``tests/unit/test_aiopool_trace.py`` checks they are still there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from billiard.einfo import ExceptionInfo
from celery import group, signals, states
from celery._state import _task_stack
from celery.app import trace as celery_trace
from celery.app.task import Context, get_actual_ignore_result
from celery.app.task import Task as BaseTask
from celery.canvas import maybe_signature
from celery.exceptions import Ignore, InvalidTaskError, Reject, Retry
from celery.utils.saferepr import saferepr
from kombu.exceptions import EncodeError, OperationalError
from kombu.utils.encoding import safe_repr

if TYPE_CHECKING:
    from celery import Celery, Task

__all__ = ("Blocking", "Call", "decoded_body", "task_hooks", "trace_on_loop", "traced_on_loop")

#: Runs synchronous code that may ``await_only``, in a greenlet that ends with it.
Blocking: TypeAlias = Callable[..., Awaitable[Any]]
#: Runs the job: ``call(task, name, args, kwargs)``, the route's function's outcome.
Call: TypeAlias = Callable[[Any, str, Any, Any], Awaitable[Any]]

_IGNORE_STATES: Final = celery_trace.IGNORE_STATES
_PRERUN: Final = signals.task_prerun
_POSTRUN: Final = signals.task_postrun
_TraceInfo: Final = celery_trace.TraceInfo
_logger: Final = celery_trace.logger
_LOG_SUCCESS: Final = celery_trace.LOG_SUCCESS


def task_hooks(task: Task) -> frozenset[str]:
    """Return which of Celery's task hooks ``task``'s class defines itself.

    Looked up once per task, as Celery's tracer does when it is built.
    """
    return frozenset(
        hook
        for hook in ("before_start", "on_success", "after_return")
        if celery_trace.task_has_custom(task, hook) is not None
    )


def traced_on_loop(task: Task, run: Callable[..., Any]) -> bool:
    """Tell whether ``task``'s jobs may be traced on the loop (see the module's doc).

    ``run`` is the function the bridge registered for the task.
    """
    app = task.app
    conf = app.conf
    if (conf.task_acks_late or task.acks_late) and conf.worker_deduplicate_successful_tasks:
        return False
    # A worker patches Celery's own Task.__call__ (its stack protection),
    # which then reads as custom on every task: only a subclass's counts.
    custom_call = celery_trace.task_has_custom(task, "__call__")
    if custom_call is not None and custom_call is not BaseTask:
        return False
    return getattr(task.run, "__func__", None) is run


def decoded_body(on_success: Any) -> tuple[Any, Any, Any] | None:  # noqa: ANN401
    """Return the body Celery's worker already decoded for a job, if it did.

    Celery's consumer decodes each message into its ``Request`` (its
    ``_payload``: args, kwargs, and the callbacks and chain to embed) and
    hands the pool the raw body too, for a pool in another process. The
    loop runs in the consumer's process: tracing from the decoded body, as
    Celery's own in-process ``Request.execute`` does, keeps one copy of the
    arguments per job in flight instead of two. ``on_success`` is the
    callback Celery gave the pool, the request's bound ``on_success``.
    """
    payload = getattr(getattr(on_success, "__self__", None), "_payload", None)
    if isinstance(payload, tuple) and len(payload) == 3:  # noqa: PLR2004 - args, kwargs, embed
        return payload
    return None


def trace_on_loop(  # noqa: PLR0913, PLR0917 - Celery's trace_task_ret's arguments
    app: Celery,
    name: str,
    uuid: str,
    request: dict[str, Any],
    body: Any,  # noqa: ANN401
    content_type: str | None,
    content_encoding: str | None,
    *,
    fast: bool,
    hooks: frozenset[str],
    call: Call,
    blocking: Blocking,
) -> Coroutine[Any, Any, tuple[int, Any, float | None]]:
    """Trace one job as Celery's ``trace_task_ret`` does; the coroutine returns what it returns.

    ``(1, ExceptionInfo, runtime)`` when the job did not succeed (failed,
    retried, rejected, ignored), ``(0, repr of the result, runtime)`` when
    it did. A body that cannot be decoded raises here, as in Celery.

    ``fast``: Celery handed the job to ``fast_trace_task`` (what ``celery
    worker`` does), which gives the request the worker's name as its
    ``hostname``; ``trace_task_ret`` gives it the machine's. ``hooks``: the
    task's own hooks, from :func:`task_hooks`.
    """
    if content_type:
        accept = celery_trace.prepare_accept_content(app.conf.accept_content)
        args, kwargs, embed = celery_trace.loads_message(
            body, content_type, content_encoding, accept=accept
        )
    else:
        args, kwargs, embed = body
    # Celery's Request put the worker's name here; its tracer (built by the
    # consumer) stores that name in the STARTED state either way.
    worker = str(request.get("hostname") or celery_trace.gethostname())
    request.update(
        {
            "args": args,
            "kwargs": kwargs,
            "hostname": worker if fast else celery_trace.gethostname(),
            "is_eager": False,
        },
        **embed or {},
    )
    trace = _Trace(app.tasks[name], name, uuid, args, kwargs, request, worker, hooks)
    return trace.run(call, blocking)


class _Trace:
    """One job's trace: the state Celery's tracer keeps in its locals, between stretches."""

    # Named as in Celery's tracer: R the outcome reported, I its TraceInfo,
    # T the runtime, Rstr the result's repr.
    __slots__ = (
        "I",
        "R",
        "Rstr",
        "T",
        "args",
        "hooks",
        "hostname",
        "kwargs",
        "name",
        "publish_result",
        "request",
        "request_dict",
        "retval",
        "started",
        "state",
        "task",
        "uuid",
    )

    def __init__(  # noqa: PLR0913, PLR0917
        self,
        task: Task,
        name: str,
        uuid: str,
        args: Any,  # noqa: ANN401
        kwargs: Any,  # noqa: ANN401
        request_dict: dict[str, Any],
        hostname: str,
        hooks: frozenset[str],
    ) -> None:
        self.task = task
        self.hooks = hooks
        self.name = name
        self.uuid = uuid
        self.args = args
        self.kwargs = kwargs
        self.request_dict = request_dict
        self.hostname = hostname
        self.request: Context | None = None
        self.publish_result = True
        self.started = time.monotonic()
        self.R: Any = None
        self.I: Any = None
        self.T: float | None = None
        self.Rstr: str | None = None
        self.retval: Any = None
        self.state: str | None = None

    async def run(self, call: Call, blocking: Blocking) -> tuple[int, Any, float | None]:
        """Trace the job; return what Celery's ``trace_task_ret`` returns.

        One coroutine for the whole trace: each layer would cost memory per
        job in flight.
        """
        task = self.task
        try:
            try:
                self.kwargs.items  # noqa: B018 - Celery's mapping check
            except AttributeError:
                msg = "Task keyword arguments is not a mapping"
                raise InvalidTaskError(msg) from None
            request = self.request = Context(
                self.request_dict, args=self.args, called_directly=False, kwargs=self.kwargs
            )
            if request.headers:
                # Celery derives the custom headers from a copy of the whole
                # request, which keeps that copy's size for the job's life:
                # the same items, in a dict their own size.
                request.headers = dict(request.headers)
            ignore_result = get_actual_ignore_result(task, request)
            self.publish_result = not ignore_result
            _task_stack.push(task)
            task.request_stack.push(request)
            try:
                track_started = not ignore_result and task.track_started
                # A stretch with nothing in it that could wait (no signal
                # receiver, no store, no hook of the task's) runs as it is,
                # without a greenlet of its own.
                if track_started or _PRERUN.receivers or "before_start" in self.hooks:
                    await blocking(self.before, track_started)
                else:
                    self.before(track_started)  # the loader's hook, Celery's no-op by default
                try:
                    retval = await call(task, self.name, self.args, self.kwargs)
                except Exception as exc:  # noqa: BLE001 - Celery's outcomes, reported below
                    await blocking(self.failed, exc)
                else:
                    await blocking(self.succeeded, retval)
                if self.state not in _IGNORE_STATES and "after_return" in self.hooks:
                    await blocking(self.after_return)
            finally:
                if _POSTRUN.receivers:
                    await blocking(self.finish)
                else:
                    self.finish()
        except Reject:
            raise
        except Exception as exc:  # noqa: BLE001 - as Celery's trace_task: an error outside the body
            await blocking(self.outside_error, exc)
        return (1, self.R, self.T) if self.I else (0, self.Rstr, self.T)

    # -- the synchronous stretches, each in a greenlet -----------------------

    def before(self, track_started: bool) -> None:  # noqa: FBT001
        """Prerun signal, the loader's hook, STARTED and ``before_start``, as Celery."""
        task, uuid = self.task, self.uuid
        signals.task_prerun.send(
            sender=task, task_id=uuid, task=task, args=self.args, kwargs=self.kwargs
        )
        task.app.loader.on_task_init(uuid, task)
        if track_started:
            task.backend.store_result(
                uuid, {"pid": os.getpid(), "hostname": self.hostname}, states.STARTED,
                request=self.request,
            )  # fmt: skip
        if "before_start" in self.hooks:
            task.before_start(uuid, self.args, self.kwargs)

    def failed(self, exc: Exception) -> None:
        """Report the job's exception as Celery's tracer does (inside its except clause)."""
        task, request = self.task, self.request
        try:
            raise exc  # noqa: TRY301 - made the one being handled: Celery reads sys.exc_info()
        except Reject as rejected:
            self.I, self.R = _TraceInfo(states.REJECTED, rejected), ExceptionInfo(internal=True)
            self.state, self.retval = self.I.state, self.I.retval
            self.I.handle_reject(task, request)
            celery_trace.traceback_clear(rejected)
        except Ignore as ignored:
            self.I, self.R = _TraceInfo(states.IGNORED, ignored), ExceptionInfo(internal=True)
            self.state, self.retval = self.I.state, self.I.retval
            self.I.handle_ignore(task, request)
            celery_trace.traceback_clear(ignored)
        except Retry as retry:
            self._on_error(retry, states.RETRY, call_errbacks=False)
            celery_trace.traceback_clear(retry)
        except Exception as error:  # noqa: BLE001 - stored as the job's failure
            self._on_error(error, states.FAILURE)
            celery_trace.traceback_clear(error)

    def succeeded(self, retval: Any) -> None:  # noqa: ANN401
        """Send callbacks and chain, store the result, then the success hooks, as Celery."""
        task, request, uuid = self.task, self.request, self.uuid
        assert request is not None  # noqa: S101 - set before the call
        self.R = self.retval = retval
        self.state = states.SUCCESS
        sent = False
        try:
            _dispatch_callbacks_and_chain(task, request, uuid, retval)
            sent = True
            task.backend.mark_as_done(uuid, retval, request, self.publish_result)
        except (EncodeError, OperationalError) as exc:
            if sent and isinstance(exc, OperationalError):
                raise
            self._on_error(exc, states.FAILURE)
            celery_trace.traceback_clear(exc)
            return
        self.Rstr = saferepr(retval, task.resultrepr_maxsize)
        self.T = time.monotonic() - self.started
        if "on_success" in self.hooks:
            self._hook("on_success", retval, uuid, self.args, self.kwargs)
        signals.task_success.send(sender=task, result=retval, runtime=self.T)
        if _logger.isEnabledFor(logging.INFO):
            _logger.info(
                _LOG_SUCCESS,
                {
                    "id": uuid,
                    "name": celery_trace.get_task_name(request, self.name),
                    "return_value": self.Rstr,
                    "runtime": self.T,
                    "args": request.get("argsrepr") or safe_repr(self.args),  # type: ignore[no-untyped-call]
                    "kwargs": request.get("kwargsrepr") or safe_repr(self.kwargs),  # type: ignore[no-untyped-call]
                },
            )

    def after_return(self) -> None:
        """Call the task's own ``after_return``, as Celery does."""
        self._hook("after_return", self.state, self.retval, self.uuid, self.args, self.kwargs, None)

    def finish(self) -> None:
        """Postrun signal, then the stacks popped and the cleanups, as Celery."""
        task = self.task
        try:
            signals.task_postrun.send(
                sender=task, task_id=self.uuid, task=task, args=self.args, kwargs=self.kwargs,
                retval=self.retval, state=self.state,
            )  # fmt: skip
        finally:
            _task_stack.pop()
            task.request_stack.pop()
            try:
                task.backend.process_cleanup()
                task.app.loader.on_process_cleanup()
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as exc:
                _logger.exception("Process cleanup failed: %r", exc)  # noqa: TRY401 - Celery's message

    def outside_error(self, exc: Exception) -> None:
        """Report an error outside the job's body (a signal handler, the store) as Celery does."""
        task = self.task
        try:
            raise exc  # noqa: TRY301 - made the one being handled: Celery reads sys.exc_info()
        except Exception:  # noqa: BLE001 - reported as Celery reports it
            celery_trace._signal_internal_error(  # noqa: SLF001
                task, self.uuid, self.args, self.kwargs, self.request_dict, exc
            )
            self.R = celery_trace.report_internal_error(task, exc)
            if self.request is not None:
                self.I = _TraceInfo(states.FAILURE, exc)
                self.I.handle_error_state(task, self.request, eager=False)

    # -- helpers -------------------------------------------------------------

    def _on_error(self, exc: Exception, state: str, *, call_errbacks: bool = True) -> None:
        info = self.I = _TraceInfo(state, exc)
        self.R = info.handle_error_state(
            self.task, self.request, eager=False, call_errbacks=call_errbacks
        )
        self.state, self.retval = info.state, info.retval

    def _hook(self, hook: str, *args: Any) -> None:  # noqa: ANN401
        """Call a task's ``on_success``/``after_return``: an error is logged, the outcome stands."""
        try:
            getattr(self.task, hook)(*args)
        except (Reject, MemoryError):
            raise
        except Exception as exc:
            _logger.exception(
                "Task %s[%s] %s handler raised: %r",
                celery_trace.get_task_name(self.request, self.name), self.uuid, hook, exc,  # noqa: TRY401
            )  # fmt: skip
            celery_trace.traceback_clear(exc)


def _dispatch_callbacks_and_chain(task: Task, request: Context, uuid: str, retval: Any) -> None:  # noqa: ANN401
    """Send the job's linked callbacks and its chain's next step, as Celery's tracer does."""
    app = task.app
    callbacks, chain = request.callbacks, request.chain
    if not callbacks and not chain:
        return
    root_id = request.root_id or uuid
    priority = (
        request.delivery_info.get("priority") if app.conf.task_inherit_parent_priority else None
    )
    publish = app.amqp._retry_publish  # noqa: SLF001 - Celery's publish with its retry policy
    ids = {"parent_id": uuid, "root_id": root_id, "priority": priority}
    if callbacks:
        signatures = [maybe_signature(callback, app=app) for callback in callbacks]
        if len(signatures) == 1:
            publish(signatures[0].apply_async, (retval,), **ids)
        else:
            groups = [sig for sig in signatures if isinstance(sig, group)]
            single = [sig for sig in signatures if not isinstance(sig, group)]
            for each in groups:
                publish(each.apply_async, (retval,), **ids)
            if single:
                publish(group(single, app=app).apply_async, (retval,), **ids)
    if chain:
        next_step = maybe_signature(chain[-1], app=app)
        publish(next_step.apply_async, (retval,), chain=chain[:-1], **ids)
