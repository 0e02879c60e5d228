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

A Jobify task's state that cannot be stored because Redis stays unreachable
(after the backend's own retries, ``result_backend_transport_options
["retry_policy"]``: 20 retries over about 20 s by default) is never dropped:
the store raises Celery's ``Reject(requeue=True)``, so the worker puts the
message back instead of acknowledging it, and the job runs again (at least
once, as documented) and stores its state once Redis is back. Celery itself
would log the error and acknowledge the message, losing the result.

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
from typing import TYPE_CHECKING, Any, Final, cast

from celery import states
from celery.exceptions import Reject

from jobify_celery._aiopool._green import await_only, in_job_greenlet
from jobify_celery._async_redis import AsyncClient

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from celery.backends.base import Backend

__all__ = ("install_quick_store", "store_retry_problem")

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


#: Celery's check-and-set in one call, for the asyncio pool: KEYS[1] the task's
#: key, ARGV[1] the encoded state, ARGV[2] the expiry ("0": none). A stored
#: SUCCESS is kept (as BaseKeyValueStoreBackend._store_result keeps it);
#: anything else is replaced and published. Returns 1 when it stored.
_CHECK_AND_SET: Final = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, stored = pcall(cjson.decode, current)
  if ok and type(stored) == 'table' and stored['status'] == 'SUCCESS' then
    return 0
  end
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
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


def store_retry_problem(backend: Backend) -> str | None:
    """Say why a Redis result backend cannot retry a store on a lost connection, if so.

    Celery's Redis backend retries only on the connection errors kombu's
    Redis transport lists; when that transport fails to import (it needs
    ``packaging``, which the ``redis`` package alone does not bring), the list
    is empty and a Redis blip fails every store at once.
    """
    try:
        from celery.backends.redis import RedisBackend  # noqa: PLC0415
    except ImportError:  # pragma: no cover - redis extra not installed
        return None
    if not isinstance(backend, RedisBackend) or backend.connection_errors:
        return None
    try:
        import kombu.transport.redis  # noqa: F401, PLC0415
    except ImportError as exc:
        cause = f"kombu's Redis transport does not import: {exc}"
    else:  # pragma: no cover - the transport imported after the backend was made
        cause = "the backend was created without kombu's Redis transport"
    return (
        f"Celery's Redis result backend cannot retry a store when Redis drops a "
        f"connection ({cause}). Install jobify-celery[redis] (it brings kombu[redis])."
    )


class _QuickStore:
    """A backend's ``_store_result``: the script for Jobify tasks, Celery's otherwise."""

    __slots__ = (
        "_async",
        "_async_script",
        "_backend",
        "_celery_store",
        "_max_size",
        "_registry",
        "_script",
        "_unreachable",
        "enabled",
    )

    def __init__(self, backend: Any) -> None:  # noqa: ANN401 - a RedisBackend
        from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415
        from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: PLC0415

        self._backend = backend
        self._celery_store: Callable[..., Any] = backend._store_result  # noqa: SLF001
        self._registry: Mapping[str, Any] = backend.app.tasks
        self._script = backend.client.register_script(_SET_IF_NEW)
        self._max_size: int = backend._MAX_STR_VALUE_SIZE  # noqa: SLF001
        #: What a store raises when Redis stays out of reach (after retries).
        self._unreachable: tuple[type[BaseException], ...] = (
            *backend.connection_errors,
            RedisConnectionError,
            RedisTimeoutError,
            OSError,
        )
        #: False once the server refused the script (scripting not allowed).
        self.enabled = True
        #: The asyncio pool's client (JSON results only: the script reads them).
        self._async = AsyncClient.of(backend) if backend.serializer == "json" else None
        self._async_script: Any = None

    def __call__(
        self,
        task_id: str,
        result: Any,  # noqa: ANN401
        state: str,
        traceback: str | None = None,
        request: Any = None,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        if not _is_jobify_task(self._registry, request):
            return self._celery_store(task_id, result, state, traceback, request=request, **kwargs)
        try:
            return self._store_jobify(task_id, result, state, traceback, request, **kwargs)
        except self._unreachable as exc:
            # Acknowledging now would lose the outcome: the message goes back.
            logger.error(  # noqa: TRY400 - the cause is in the message; no traceback needed
                "Cannot store the %s state of task %s: Redis is unreachable (%s: %s). "
                "Its message goes back to the queue; the job will run again.",
                state,
                task_id,
                type(exc).__name__,
                exc,
            )
            raise Reject(exc, requeue=True) from exc

    def _store_jobify(
        self,
        task_id: str,
        result: Any,  # noqa: ANN401
        state: str,
        traceback: str | None,
        request: Any,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        if self.enabled:
            backend = self._backend
            meta = backend._get_result_meta(  # noqa: SLF001
                result=result, state=state, traceback=traceback, request=request
            )
            meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
            value = backend.encode(meta)
            key = backend.get_key_for_task(task_id)
            # Too large a value: Celery's path refuses it with its own error.
            if not (isinstance(value, str) and len(value) > self._max_size):
                if self._async is not None and in_job_greenlet():
                    # The asyncio pool: the whole check-and-set, on the loop.
                    await_only(self._store_on_loop(key, value, _expiry(backend, state)))
                    return result
                if self._set_if_new(key, value, _expiry(backend, state)):
                    return result
        # A state is stored already (or no script): Celery's check-and-set.
        return self._celery_store(task_id, result, state, traceback, request=request, **kwargs)

    async def _store_on_loop(self, key: bytes, value: str | bytes, expires: int) -> None:
        """Store as Celery's check-and-set does, in one script: a SUCCESS is never replaced."""
        client = cast("AsyncClient", self._async)

        async def store(redis_client: Any) -> Any:  # noqa: ANN401
            script = self._async_script
            if script is None or script.registered_client is not redis_client:
                script = self._async_script = redis_client.register_script(_CHECK_AND_SET)
            return await script(keys=[key], args=[value, expires])

        await client.call("Storing a job's state", store)

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
