"""Deliver workers' results to the producer's event loop.

One watcher per producer process and loop serves every job that is awaited:

* ``RedisWatcher`` for Celery's Redis result backend: one asyncio Redis
  connection subscribed to each pending task's result channel (Celery's
  backend publishes every stored state there), plus a read of the stored key
  after each subscription so a result that landed first is not missed, and a
  slow sweep that reads every pending key in case a message was lost while
  reconnecting. No thread, no polling per job.
* ``PollingWatcher`` for every other backend: one task that reads all
  pending results in a batch on one helper thread, every ``interval``.

Both call ``callback(meta)`` on the loop with the stored meta as decoded from
JSON (exceptions not yet rebuilt); a callback returns ``True`` once it needs
no more, which ends its watch. Several callbacks may follow one task id (a
process that both pushes a job and runs it follows it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Protocol

from celery.backends.base import BaseKeyValueStoreBackend, DisabledBackend

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from celery.backends.base import Backend

__all__ = (
    "MetaCallback",
    "PollingWatcher",
    "RedisWatcher",
    "Watcher",
    "read_metas",
    "watcher_for",
)

logger = logging.getLogger("jobify_celery.results")

MetaCallback = Callable[[dict[str, Any]], bool]

_SWEEP_SECONDS: Final = 5.0
_RECONNECT_SECONDS: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
_MGET_BATCH: Final = 500
_PLAIN_REDIS_KEYS: Final = frozenset(
    {
        "host",
        "port",
        "db",
        "password",
        "username",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "health_check_interval",
        "client_name",
        "credential_provider",
        "max_connections",
    }
)


_IGNORED_REDIS_KEYS: Final = frozenset(
    {"driver_info", "lib_name", "lib_version", "retry_on_timeout"}
)


class Watcher(Protocol):
    """Follows pending task ids until their result is stored."""

    def watch(self, task_id: str, callback: MetaCallback) -> None:
        """Start calling ``callback`` with each state stored for ``task_id``."""

    def forget(self, task_id: str, callback: MetaCallback) -> None:
        """Stop calling ``callback`` for ``task_id``."""

    async def close(self) -> None:
        """Stop following everything and release connections."""


def watcher_for(backend: Backend) -> Watcher | None:
    """Pick the watcher for a Celery result backend; ``None`` for no backend."""
    if isinstance(backend, DisabledBackend):
        return None
    params = _async_redis_params(backend)
    if params is not None:
        return RedisWatcher(backend, params)
    return PollingWatcher(backend)


def _async_redis_params(backend: Backend) -> dict[str, Any] | None:
    try:
        from celery.backends.redis import RedisBackend  # noqa: PLC0415
    except ImportError:  # pragma: no cover - redis extra not installed
        return None
    if type(backend) is not RedisBackend:
        return None
    conn: Mapping[str, Any] = backend.connparams
    if set(conn) - _PLAIN_REDIS_KEYS - _IGNORED_REDIS_KEYS:
        # TLS, unix sockets and other shapes: polling is slower but exact.
        return None
    params = {k: v for k, v in conn.items() if k in _PLAIN_REDIS_KEYS and v is not None}
    params["socket_keepalive"] = True
    params.pop("max_connections", None)
    return params


class _Followers:
    """The callbacks following each task id."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, list[MetaCallback]] = {}

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def ids(self) -> list[str]:
        return list(self._by_id)

    def add(self, task_id: str, callback: MetaCallback) -> None:
        self._by_id.setdefault(task_id, []).append(callback)

    def remove(self, task_id: str, callback: MetaCallback) -> bool:
        """Drop one callback; tell whether nobody follows ``task_id`` any more."""
        callbacks = self._by_id.get(task_id)
        if callbacks is None:
            return False
        if callback in callbacks:
            callbacks.remove(callback)
        if callbacks:
            return False
        del self._by_id[task_id]
        return True

    def deliver(self, task_id: str, meta: dict[str, Any]) -> bool:
        """Call every follower; tell whether nobody follows ``task_id`` any more."""
        callbacks = self._by_id.get(task_id)
        if not callbacks:
            return False
        finished = [callback for callback in list(callbacks) if callback(meta)]
        ended = False
        for callback in finished:
            ended = self.remove(task_id, callback) or ended
        return ended


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RedisWatcher:
    """Follows results through Redis pub/sub on one asyncio connection.

    The connection opens with the first watch and stays open until
    ``close()``, so a producer that pushes and awaits one job after another
    pays no connection set-up per job.
    """

    def __init__(self, backend: Backend, params: dict[str, Any]) -> None:
        self._backend = backend
        self._params = params
        self._callbacks = _Followers()
        self._channels: dict[bytes, str] = {}
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[bytes] = set()
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._keep_alive_channel = f"jobify-celery-watcher-{uuid.uuid4().hex}"

    def watch(self, task_id: str, callback: MetaCallback) -> None:
        """Follow ``task_id``; ``callback`` gets each state the worker stores."""
        self._callbacks.add(task_id, callback)
        self._to_subscribe.add(task_id)
        self._wakeup.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="jobify-celery-result-watcher"
            )

    def forget(self, task_id: str, callback: MetaCallback) -> None:
        """Stop calling ``callback`` for ``task_id``."""
        if not self._callbacks.remove(task_id, callback):
            return
        self._unsubscribe(task_id)

    def _unsubscribe(self, task_id: str) -> None:
        self._to_subscribe.discard(task_id)
        key = self._key(task_id)
        if self._channels.pop(key, None) is not None:
            self._to_unsubscribe.add(key)
            self._wakeup.set()

    async def close(self) -> None:
        """Cancel the connection task; pending jobs stay as they are."""
        runner, self._runner = self._runner, None
        await _cancel(runner)

    def _key(self, task_id: str) -> bytes:
        key = self._backend.get_key_for_task(task_id)
        return key if isinstance(key, bytes) else str(key).encode()

    def _deliver(self, task_id: str, payload: Any) -> None:  # noqa: ANN401
        if task_id not in self._callbacks or payload is None:
            return
        try:
            meta = self._backend.decode(payload)
        except Exception:
            logger.exception("Cannot decode the stored result of task %s", task_id)
            return
        if self._callbacks.deliver(task_id, meta):
            self._unsubscribe(task_id)

    async def _run(self) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415

        failures = 0
        while True:
            try:
                await self._session(aioredis.Redis(**self._params))
                failures = 0
            except (RedisError, OSError) as exc:
                delay = _RECONNECT_SECONDS[min(failures, len(_RECONNECT_SECONDS) - 1)]
                failures += 1
                logger.warning("Result watcher lost Redis (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _session(self, client: Any) -> None:  # noqa: ANN401
        pubsub = client.pubsub()
        reader: asyncio.Task[None] | None = None
        try:
            await pubsub.subscribe(self._keep_alive_channel)
            self._channels.clear()
            self._to_unsubscribe.clear()
            self._to_subscribe.update(self._callbacks.ids())
            reader = asyncio.get_running_loop().create_task(self._read(pubsub))
            while True:
                await self._sync_subscriptions(client, pubsub)
                await self._wait_for_work(reader)
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _wait_for_work(self, reader: asyncio.Task[None]) -> None:
        waiter = asyncio.ensure_future(self._wakeup.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, reader}, timeout=_SWEEP_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if reader in done:
            reader.result()  # a lost connection raises here
            msg = "result channel closed"
            raise ConnectionError(msg)
        if not done:
            # Quiet for a while: read every pending key once, in case a
            # published result was missed during a reconnect.
            self._to_subscribe.update(self._callbacks.ids())
        self._wakeup.clear()

    async def _sync_subscriptions(self, client: Any, pubsub: Any) -> None:  # noqa: ANN401
        if self._to_unsubscribe:
            channels = list(self._to_unsubscribe)
            self._to_unsubscribe.clear()
            await pubsub.unsubscribe(*channels)
        while self._to_subscribe:
            batch = [t for t in self._to_subscribe if t in self._callbacks][:_MGET_BATCH]
            self._to_subscribe.difference_update(batch)
            self._to_subscribe.intersection_update(self._callbacks.ids())
            if not batch:
                continue
            keys = [self._key(t) for t in batch]
            fresh = [k for k in keys if k not in self._channels]
            for key, task_id in zip(keys, batch, strict=True):
                self._channels[key] = task_id
            if fresh:
                await pubsub.subscribe(*fresh)
            for task_id, payload in zip(batch, await client.mget(keys), strict=True):
                self._deliver(task_id, payload)

    async def _read(self, pubsub: Any) -> None:  # noqa: ANN401
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None or message.get("type") != "message":
                continue
            channel = message.get("channel")
            task_id = self._channels.get(channel) if isinstance(channel, bytes) else None
            if task_id is not None:
                self._deliver(task_id, message.get("data"))


class PollingWatcher:
    """Follows results by reading them in batches on one helper thread."""

    def __init__(self, backend: Backend, interval: float = 0.05) -> None:
        self._backend = backend
        self._interval = interval
        self._callbacks = _Followers()
        self._runner: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def watch(self, task_id: str, callback: MetaCallback) -> None:
        """Follow ``task_id``; ``callback`` gets each state the worker stores."""
        self._callbacks.add(task_id, callback)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="jobify-celery-result-poller"
            )

    def forget(self, task_id: str, callback: MetaCallback) -> None:
        """Stop calling ``callback`` for ``task_id``."""
        self._callbacks.remove(task_id, callback)

    async def close(self) -> None:
        """Stop polling and release the helper thread."""
        runner, self._runner = self._runner, None
        await _cancel(runner)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobify-celery-results")
        loop = asyncio.get_running_loop()
        while self._callbacks:
            ids = self._callbacks.ids()
            try:
                metas = await loop.run_in_executor(self._executor, read_metas, self._backend, ids)
            except Exception:
                logger.warning("Reading results failed; retrying", exc_info=True)
                metas = []
            for task_id, meta in metas:
                self._callbacks.deliver(task_id, meta)
            await asyncio.sleep(self._interval)


def read_metas(backend: Backend, ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Read the stored metas of ``ids`` (blocking), as decoded from JSON."""
    if isinstance(backend, BaseKeyValueStoreBackend):
        return list(_read_stored(backend, ids))
    found = []
    for task_id in ids:
        meta = backend.get_task_meta(task_id, cache=False)
        if isinstance(meta, dict):
            found.append((task_id, meta))
    return found


def _read_stored(
    backend: BaseKeyValueStoreBackend, ids: list[str]
) -> Iterable[tuple[str, dict[str, Any]]]:
    keys = [backend.get_key_for_task(t) for t in ids]
    values = backend.mget(keys)
    payloads = [values.get(k) for k in keys] if hasattr(values, "get") else list(values)
    for task_id, payload in zip(ids, payloads, strict=True):
        if payload is not None:
            meta = backend.decode(payload)
            if isinstance(meta, dict):
                yield task_id, meta
