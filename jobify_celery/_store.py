"""Store a Jobify run's state in one Redis round trip instead of two.

Celery's Redis backend stores a task's state in two round trips: a ``GET``
of the task's key, so that a SUCCESS stored by an earlier delivery of the same
task is never overwritten, then a transaction that writes the key (with the
backend's expiry) and publishes the new value on the key's channel, where
``AsyncResult.get()`` and the producers' watchers listen. On a loopback
server the worker spends about a quarter of a millisecond of CPU per task on
that, more than on running a no-op job.

For a Jobify task, the state is stored by a server-side script in one round
trip instead: it writes the key only if the key does not exist yet
(``SET ... NX``, same expiry as Celery's) and publishes only when it wrote. A
key that does not exist holds no SUCCESS, so this is Celery's check-and-set
done atomically. When the key exists (a retry, a ``STARTED`` state stored
first, a second delivery of the task), the script changes nothing and
Celery's own check-and-set runs, so what ends up stored and published is
always what Celery would store and publish.

Only stores of Jobify tasks (``request.task`` names a task with a Jobify route)
take this path, and only on a backend that is Celery's ``RedisBackend`` or a
subclass that keeps its store methods (``SentinelBackend`` does): a backend
whose store methods are overridden keeps them, untouched. The path is
installed on each backend instance (Celery keeps one per thread) the first
time a Jobify task runs with it. ``tests/integration/test_store.py`` pins the
behaviour against a real Redis, Celery's own sequence (GET, SETEX, PUBLISH)
included, so a Celery release that stores differently fails there first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from celery import states

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from celery.backends.base import Backend

__all__ = ("install_quick_store",)

logger = logging.getLogger("jobify_celery.worker")

#: Set on a backend instance once it has been looked at (True: path installed).
_MARK: Final = "_jobify_celery_quick_store"

#: KEYS[1]: the task's key; ARGV[1]: the encoded state; ARGV[2]: expiry in
#: seconds, "0" for none. Returns 1 when it stored and published, else 0.
_SET_IF_NEW: Final = """
local stored
if ARGV[2] == '0' then
  stored = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  stored = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
end
if stored then
  redis.call('PUBLISH', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def install_quick_store(backend: Backend) -> None:
    """Give ``backend`` the one-round-trip store for Jobify tasks, if it qualifies.

    Cheap to call on every task: a backend already looked at returns at once.
    """
    if _MARK in vars(backend):
        return
    qualifies = _keeps_celery_store(backend)
    if qualifies:
        _install(backend)
    setattr(backend, _MARK, qualifies)


def _keeps_celery_store(backend: Backend) -> bool:
    """Tell whether ``backend`` stores states exactly as Celery's RedisBackend does."""
    try:
        from celery.backends.base import BaseKeyValueStoreBackend  # noqa: PLC0415
        from celery.backends.redis import RedisBackend  # noqa: PLC0415
    except ImportError:  # pragma: no cover - redis extra not installed
        return False
    if not isinstance(backend, RedisBackend):
        return False
    cls = type(backend)
    inherited = (
        (cls._store_result, BaseKeyValueStoreBackend._store_result),  # noqa: SLF001
        (cls._set_with_state, RedisBackend._set_with_state),  # noqa: SLF001
        (cls.set, RedisBackend.set),
        (cls._set, RedisBackend._set),  # noqa: SLF001
    )
    if any(got is not celery_own for got, celery_own in inherited):
        return False
    # Instance attributes would shadow the class's methods the same way.
    return not {"_store_result", "_set_with_state", "set", "_set"} & vars(backend).keys()


def _install(backend: Any) -> None:  # noqa: ANN401 - a RedisBackend
    backend._store_result = _QuickStore(backend)  # noqa: SLF001


class _QuickStore:
    """A backend's ``_store_result``: the script for Jobify tasks, Celery's otherwise."""

    __slots__ = ("_backend", "_celery_store", "_max_size", "_registry", "_script", "enabled")

    def __init__(self, backend: Any) -> None:  # noqa: ANN401 - a RedisBackend
        self._backend = backend
        self._celery_store: Callable[..., Any] = backend._store_result  # noqa: SLF001
        self._registry: Mapping[str, Any] = backend.app.tasks
        self._script = backend.client.register_script(_SET_IF_NEW)
        self._max_size: int = backend._MAX_STR_VALUE_SIZE  # noqa: SLF001
        #: False once the server refused the script (scripting not allowed).
        self.enabled = True

    def __call__(
        self,
        task_id: str,
        result: Any,  # noqa: ANN401
        state: str,
        traceback: str | None = None,
        request: Any = None,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        if self.enabled and _is_jobify_task(self._registry, request):
            backend = self._backend
            meta = backend._get_result_meta(  # noqa: SLF001
                result=result, state=state, traceback=traceback, request=request
            )
            meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
            value = backend.encode(meta)
            # Too large a value: Celery's path refuses it with its own error.
            if not (isinstance(value, str) and len(value) > self._max_size) and self._set_if_new(
                backend.get_key_for_task(task_id), value, _expiry(backend, state)
            ):
                return result
        # Not a Jobify task, or a state is stored already: Celery's check-and-set.
        return self._celery_store(task_id, result, state, traceback, request=request, **kwargs)

    def _set_if_new(self, key: bytes, value: str | bytes, expires: int) -> bool:
        from redis.exceptions import NoPermissionError, ResponseError  # noqa: PLC0415

        backend = self._backend
        try:
            stored = backend.ensure(
                lambda: self._script(keys=[key], args=[value, expires], client=backend.client),
                (),
            )
        except ResponseError as exc:
            # The script failed as a whole, so it wrote nothing: Celery's path
            # stores the state, or fails the way Celery fails (OOM, READONLY).
            if isinstance(exc, NoPermissionError) or "unknown command" in str(exc).lower():
                # ACLs or a proxy that forbid scripts: no use trying again.
                self.enabled = False
                logger.warning(
                    "Redis refused the result-store script (%s); Jobify task states "
                    "are stored with Celery's two round trips from now on",
                    exc,
                )
            return False
        return bool(stored)


def _is_jobify_task(registry: Mapping[str, Any], request: Any) -> bool:  # noqa: ANN401
    name = getattr(request, "task", None)
    if not isinstance(name, str):
        return False
    return getattr(registry.get(name), "jobify_route", None) == name


def _expiry(backend: Any, state: str) -> int:  # noqa: ANN401 - a RedisBackend
    """Return the key's expiry in seconds as Celery's RedisBackend sets it (0: none)."""
    expires = backend.failure_expires if state == states.FAILURE else None
    if expires is None:
        expires = backend.expires
    return int(expires) if expires else 0
