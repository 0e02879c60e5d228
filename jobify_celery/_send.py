"""Send a pushed job through Celery without Celery's own result subscription.

With the Redis result backend, Celery's ``send_task`` subscribes the
publishing thread's result consumer to the task's result channel
(``backend.on_task_call``), so that ``AsyncResult.get()`` cannot miss a
result that lands before it is called, and the returned ``AsyncResult``
unsubscribes when it is garbage collected. That is a Redis SUBSCRIBE and an
UNSUBSCRIBE on the publishing thread for every message: about 15% of a
publish on a loopback broker.

A Jobify push never hands that ``AsyncResult`` out: the producer's own
watcher (``_results``) follows the job on its event loop; nor does beat, which
reads its runs' outcomes from the backend. So those are sent with the
subscription left out, and everything else about the send (routing,
signals, retry policy, ETA handling) stays Celery's. Calls made the Celery
way (``route.delay()``, ``apply_async``, canvas) keep the subscription, since
their callers may ``.get()``.

This is the one place that relies on ``send_task`` calling
``backend.on_task_call(producer, task_id)`` on the app's (thread-local)
backend; ``test_a_push_is_followed_by_the_watcher_alone`` in
``tests/integration/test_bridge.py`` pins it against a real Redis.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from celery import Task
    from celery.backends.base import Backend

__all__ = ("send_followed",)

#: Marks a backend's ``on_task_call`` once the switch below wraps it.
_SWITCH_MARK: Final = "jobify_celery_switch"
#: Set while a push is being sent: the backend's subscription step is skipped.
_FOLLOWED_BY_JOBIFY: Final = contextvars.ContextVar("jobify_celery_followed", default=False)


def send_followed(
    task: Task,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    **options: Any,  # noqa: ANN401
) -> Any:  # noqa: ANN401
    """Publish ``task`` as ``apply_async`` does, for a job the bridge follows itself.

    Returns what ``apply_async`` returns (an ``AsyncResult``).
    """
    backend = task.app.backend  # the one send_task calls: the app's, this thread's
    if not _has_switch(backend):
        if not _subscribes_on_send(backend):
            return task.apply_async(args, kwargs, **options)
        _install_switch(backend)
    token = _FOLLOWED_BY_JOBIFY.set(True)
    try:
        return task.apply_async(args, kwargs, **options)
    finally:
        _FOLLOWED_BY_JOBIFY.reset(token)


def _subscribes_on_send(backend: Backend) -> bool:
    """Tell whether the backend's send-time step only serves ``AsyncResult.get``.

    True for the Redis backends (Sentinel included), and for the RPC backend,
    whose step declares the reply queue of the sending connection: a Jobify
    producer cannot read results from there (``watcher_for`` says so), and a
    captured message (``_capture``) has no channel to declare it on.
    """
    from celery.backends.rpc import RPCBackend  # noqa: PLC0415

    if isinstance(backend, RPCBackend):
        return True
    try:
        from celery.backends.redis import RedisBackend  # noqa: PLC0415
    except ImportError:  # pragma: no cover - redis extra not installed
        return False
    return isinstance(backend, RedisBackend)


def _has_switch(backend: Backend) -> bool:
    return bool(getattr(backend.on_task_call, _SWITCH_MARK, False))


def _install_switch(backend: Backend) -> None:
    """Make this backend instance skip ``on_task_call`` while a push is sent."""
    original: Callable[[Any, str], Any] = backend.on_task_call

    def on_task_call(producer: Any, task_id: str) -> Any:  # noqa: ANN401
        if _FOLLOWED_BY_JOBIFY.get():
            return None
        return original(producer, task_id)

    setattr(on_task_call, _SWITCH_MARK, True)
    backend.on_task_call = on_task_call
