"""Deliver workers' results to the producer's event loop.

One watcher per producer process and loop serves every job that is awaited:

* ``RedisWatcher`` for Celery's Redis result backend: one pub/sub
  connection (``_redis_pubsub``) subscribed to each pending task's result
  channel (Celery's backend publishes every stored state there). A job not
  published yet is subscribed at once, ahead of its message, so nothing can
  be stored before the subscription; any other watch reads the stored key
  once its subscription is confirmed, so a result that landed first is not
  missed. Every 5 s a sweep reads every pending key (a message lost while
  reconnecting) and pings the server (one that stopped answering counts as
  an outage). No thread, no polling per job.
* ``PollingWatcher`` for every other backend: one task that reads all
  pending results in a batch on one helper thread, every ``interval``.

Both hand each stored meta, as decoded from JSON (exceptions not yet
rebuilt), to the followers of its task id on the loop (``_followers``); a
follower returns ``True`` once it needs no more, which ends its watch. Several
followers may follow one task id (a process that both pushes a job and runs it
follows it twice).

Stopping never relies on a cancellation arriving: ``close()`` raises a flag
that ends the watcher's loops, wakes them, and waits for them within a bound;
only then does it cancel, and it never waits longer than the bound (a client
library that swallows a cancel cannot hold the app's shutdown). When the
results stay out of reach for longer than ``outage_timeout``, every follower is
told the results are lost (``Follower.on_lost``) instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Protocol

from celery.backends.base import BaseKeyValueStoreBackend, DisabledBackend

from jobify_celery._async_redis import async_params
from jobify_celery._followers import Followers, Outage
from jobify_celery._redis_pubsub import PubSubConnection
from jobify_celery._tasks import stop_task

if TYPE_CHECKING:
    from collections.abc import Iterable

    from celery.backends.base import Backend

    from jobify_celery._followers import Follower

__all__ = (
    "PollingWatcher",
    "RedisWatcher",
    "Watcher",
    "read_metas",
    "watcher_for",
)

logger = logging.getLogger("jobify_celery.results")

_SWEEP_SECONDS: Final = 5.0
#: Shortest time between two subscription syncs while jobs keep coming.
_COALESCE_SECONDS: Final = 0.001
#: How long closing a connection may take.
_CLOSE_SECONDS: Final = 0.25
_RECONNECT_SECONDS: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
_MGET_BATCH: Final = 500


class Watcher(Protocol):
    """Follows pending task ids until their result is stored."""

    def watch(self, task_id: str, follower: Follower, *, unpublished: bool = False) -> None:
        """Start handing ``follower`` each state stored for ``task_id``.

        ``unpublished``: the task's message is not sent yet, so no state can
        be stored before the subscription the watch sends at once (no read of
        the stored key is needed).
        """

    def forget(self, task_id: str, follower: Follower) -> None:
        """Stop handing states of ``task_id`` to ``follower``."""

    async def close(self, grace: float) -> None:
        """Stop following everything and release connections, within ``grace`` seconds."""


def watcher_for(backend: Backend, *, outage_timeout: float | None) -> Watcher | None:
    """Pick the watcher for a Celery result backend; ``None``: results cannot be followed.

    That is the case with no backend, and with the RPC backend, which sends a
    result to the reply queue of the connection that published the task.
    """
    from celery.backends.rpc import RPCBackend  # noqa: PLC0415

    if isinstance(backend, (DisabledBackend, RPCBackend)):
        return None
    params = async_params(backend)
    if params is not None:
        return RedisWatcher(backend, params, outage_timeout=outage_timeout)
    return PollingWatcher(backend, outage_timeout=outage_timeout)


def _lost_reason(backend: Backend, outage: Outage, now: float) -> str:
    return f"the result backend {_where(backend)} {outage.describe(now)}"


def _where(backend: Backend) -> str:
    try:
        return str(backend.as_uri())
    except Exception:  # noqa: BLE001 - only used in a message
        return type(backend).__name__


class RedisWatcher:
    """Follows results through Redis pub/sub on one asyncio connection.

    The connection opens with the first watch and stays open until
    ``close()``, so a producer that pushes and awaits one job after another
    pays no connection set-up per job.
    """

    def __init__(
        self, backend: Backend, params: dict[str, Any], *, outage_timeout: float | None
    ) -> None:
        self._backend = backend
        self._params = params
        self._followers = Followers()
        self._channels: dict[bytes, str] = {}
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[bytes] = set()
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._pubsub: PubSubConnection | None = None
        self._outage = Outage(outage_timeout)
        self._failures = 0
        self._last_sync = 0.0
        self._last_sweep = 0.0
        self._keep_alive_channel = f"jobify-celery-watcher-{uuid.uuid4().hex}"

    def watch(self, task_id: str, follower: Follower, *, unpublished: bool = False) -> None:
        """Follow ``task_id``; ``follower`` gets each state the worker stores.

        For a task not published yet (``unpublished``), the SUBSCRIBE leaves at
        once, ahead of the task's message, so no state of it can be stored
        before Redis has the subscription: no read of the key is needed. (The
        sweep reads every pending key every few seconds all the same.)
        """
        if self._stopping.is_set():
            follower.on_lost("the result watcher is closed (the app is shutting down)")
            return
        self._followers.add(task_id, follower)
        pubsub = self._pubsub
        if unpublished and pubsub is not None:
            key = self._key(task_id)
            if key in self._channels:
                return
            if pubsub.subscribe_now(key):
                self._channels[key] = task_id
                return
        self._to_subscribe.add(task_id)
        self._wakeup.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="jobify-celery-result-watcher"
            )

    def forget(self, task_id: str, follower: Follower) -> None:
        """Stop handing states of ``task_id`` to ``follower``."""
        if not self._followers.remove(task_id, follower):
            return
        self._unsubscribe(task_id)

    def _unsubscribe(self, task_id: str) -> None:
        self._to_subscribe.discard(task_id)
        key = self._key(task_id)
        if self._channels.pop(key, None) is not None:
            self._to_unsubscribe.add(key)
            self._wakeup.set()

    async def close(self, grace: float) -> None:
        """End the connection task within ``grace``; pending jobs stay as they are."""
        self._stopping.set()
        self._wakeup.set()
        runner, self._runner = self._runner, None
        await stop_task(runner, grace, "the result watcher")

    def _key(self, task_id: str) -> bytes:
        key = self._backend.get_key_for_task(task_id)
        return key if isinstance(key, bytes) else str(key).encode()

    def _deliver(self, task_id: str, payload: Any) -> None:  # noqa: ANN401
        if task_id not in self._followers or payload is None:
            return
        try:
            meta = self._backend.decode(payload)
        except Exception:
            logger.exception("Cannot decode the stored result of task %s", task_id)
            return
        if self._followers.deliver(task_id, meta):
            self._unsubscribe(task_id)

    async def _run(self) -> None:
        from redis.exceptions import RedisError  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                if self._stopping.is_set():
                    return
                now = loop.time()
                self._outage.failed(now)
                if self._outage.exceeded(now):
                    self._lose_everything(_lost_reason(self._backend, self._outage, now))
                delay = _RECONNECT_SECONDS[min(self._failures, len(_RECONNECT_SECONDS) - 1)]
                self._failures += 1
                logger.warning("Result watcher lost Redis (%s); reconnecting in %.1fs", exc, delay)
                await _pause(self._stopping, delay)

    def _lose_everything(self, reason: str) -> None:
        dropped = self._followers.lose_all(reason)
        self._to_subscribe.clear()
        self._channels.clear()
        if dropped:
            logger.error("Gave up following %d job(s): %s", dropped, reason)

    async def _session(self) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415

        params = self._params
        client = aioredis.Redis(**params)  # MGET: results stored before a subscription
        pubsub: PubSubConnection | None = None
        try:
            async with asyncio.timeout(params["socket_connect_timeout"]):
                pubsub = await PubSubConnection.open(
                    params.get("host", "localhost"),
                    int(params.get("port", 6379)),
                    on_message=self._on_message,
                    username=params.get("username"),
                    password=params.get("password"),
                    keep_alive_channel=self._keep_alive_channel.encode(),
                )
            self._outage.recovered()
            self._failures = 0
            self._channels.clear()
            self._to_unsubscribe.clear()
            self._to_subscribe.update(self._followers.ids())
            self._pubsub = pubsub
            while not self._stopping.is_set():
                await self._sync_subscriptions(client, pubsub)
                await self._wait_for_work(pubsub)
        finally:
            self._pubsub = None
            if pubsub is not None:
                pubsub.close()
            await _closed(client.aclose())

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        task_id = self._channels.get(channel)
        if task_id is not None:
            self._deliver(task_id, payload)

    async def _wait_for_work(self, pubsub: PubSubConnection) -> None:
        loop = asyncio.get_running_loop()
        if not self._wakeup.is_set():
            waiter = asyncio.ensure_future(self._wakeup.wait())
            either: set[asyncio.Future[Any]] = {waiter, pubsub.closed}
            try:
                await asyncio.wait(
                    either,
                    timeout=_SWEEP_SECONDS,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiter.cancel()
        if pubsub.closed.done():
            if self._stopping.is_set():
                return
            pubsub.closed.result()  # a lost connection raises here
            msg = "the result watcher's Redis connection ended"
            raise ConnectionError(msg)
        if loop.time() - self._last_sweep >= _SWEEP_SECONDS:
            self._sweep(pubsub, loop.time())
        # A burst of pushes shares one SUBSCRIBE and one MGET: the first job
        # after a quiet spell is followed at once, the next ones at most
        # _COALESCE_SECONDS after the previous sync.
        wait = self._last_sync + _COALESCE_SECONDS - loop.time()
        if wait > 0 and not self._stopping.is_set():
            await asyncio.sleep(wait)
        self._wakeup.clear()
        self._last_sync = loop.time()

    def _sweep(self, pubsub: PubSubConnection, now: float) -> None:
        """Every few seconds: check the server answers, and read every pending key once.

        A result published while no subscription was in place (during a
        reconnect) is found by the reads; a server that stopped answering
        (a stalled network) ends the session, so the outage is counted.
        """
        if not pubsub.answered:
            msg = f"Redis did not answer a PING within {_SWEEP_SECONDS:g} s"
            raise TimeoutError(msg)
        pubsub.ping()
        self._last_sweep = now
        self._to_subscribe.update(self._followers.ids())

    async def _sync_subscriptions(self, client: Any, pubsub: PubSubConnection) -> None:  # noqa: ANN401
        if self._to_unsubscribe:
            channels = list(self._to_unsubscribe)
            self._to_unsubscribe.clear()
            pubsub.unsubscribe(*channels)
        while self._to_subscribe and not self._stopping.is_set():
            # Only the ids waiting here are looked at: never every id followed.
            followed = [t for t in self._to_subscribe if t in self._followers]
            batch = followed[:_MGET_BATCH]
            self._to_subscribe = set(followed[_MGET_BATCH:])
            if not batch:
                continue
            keys = [self._key(t) for t in batch]
            fresh = [k for k in keys if k not in self._channels]
            for key, task_id in zip(keys, batch, strict=True):
                self._channels[key] = task_id
            # Subscribed first, read second: a state stored in between is in
            # one or the other, never lost.
            await pubsub.subscribe(*fresh)
            for task_id, payload in zip(batch, await client.mget(keys), strict=True):
                self._deliver(task_id, payload)


class PollingWatcher:
    """Follows results by reading them in batches on one helper thread."""

    def __init__(
        self, backend: Backend, interval: float = 0.05, *, outage_timeout: float | None
    ) -> None:
        self._backend = backend
        self._interval = interval
        self._followers = Followers()
        self._runner: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = asyncio.Event()
        self._outage = Outage(outage_timeout)

    def watch(self, task_id: str, follower: Follower, *, unpublished: bool = False) -> None:
        """Follow ``task_id``; ``follower`` gets each state the worker stores."""
        del unpublished  # every read is a full read here
        if self._stopping.is_set():
            follower.on_lost("the result watcher is closed (the app is shutting down)")
            return
        self._followers.add(task_id, follower)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="jobify-celery-result-poller"
            )

    def forget(self, task_id: str, follower: Follower) -> None:
        """Stop handing states of ``task_id`` to ``follower``."""
        self._followers.remove(task_id, follower)

    async def close(self, grace: float) -> None:
        """Stop polling within ``grace`` and release the helper thread."""
        self._stopping.set()
        runner, self._runner = self._runner, None
        await stop_task(runner, grace, "the result poller")
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobify-celery-results")
        loop = asyncio.get_running_loop()
        while self._followers and not self._stopping.is_set():
            ids = self._followers.ids()
            try:
                metas = await loop.run_in_executor(self._executor, read_metas, self._backend, ids)
            except Exception:
                now = loop.time()
                self._outage.failed(now)
                if self._outage.exceeded(now):
                    reason = _lost_reason(self._backend, self._outage, now)
                    dropped = self._followers.lose_all(reason)
                    if dropped:
                        logger.error("Gave up following %d job(s): %s", dropped, reason)  # noqa: TRY400
                logger.warning("Reading results failed; retrying", exc_info=True)
                metas = []
            else:
                self._outage.recovered()
            for task_id, meta in metas:
                self._followers.deliver(task_id, meta)
            await _pause(self._stopping, self._interval)


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stopping`` is set meanwhile."""
    if stopping.is_set():
        return
    waiter = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


async def _closed(*closing: Any) -> None:  # noqa: ANN401
    """Close connections, giving up on any that does not close within a bound."""
    tasks = [asyncio.ensure_future(coro) for coro in closing]
    for task in tasks:
        await stop_task(task, _CLOSE_SECONDS, "a Redis connection's close", cancel=False)


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
