"""Reach a Celery Redis result backend from an event loop, as the backend itself would.

``async_params`` turns the backend's connection parameters into redis-py
asyncio ones (``None`` for shapes it leaves to the backend: TLS, unix
sockets, Sentinel, subclasses). ``AsyncClient`` keeps one asyncio client for
the loop that uses it (the asyncio pool's result stores and record reads),
and retries a lost connection as the backend's retry policy says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from celery.backends.base import Backend

__all__ = ("AsyncClient", "async_params")

#: Attribute of a backend instance holding its ``AsyncClient`` (or ``False``).
_CLIENT_ATTR: Final = "_jobify_celery_async_client"

logger = logging.getLogger("jobify_celery")

T = TypeVar("T")

#: Bounds for a Redis that accepts connections but does not answer.
CONNECT_TIMEOUT: Final = 5.0
COMMAND_TIMEOUT: Final = 10.0

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


def async_params(backend: Backend) -> dict[str, Any] | None:
    """Return redis-py asyncio parameters for Celery's plain ``RedisBackend``, else ``None``."""
    try:
        from celery.backends.redis import RedisBackend  # noqa: PLC0415
    except ImportError:  # pragma: no cover - redis extra not installed
        return None
    if type(backend) is not RedisBackend:
        return None
    conn: Mapping[str, Any] = backend.connparams
    if set(conn) - _PLAIN_REDIS_KEYS - _IGNORED_REDIS_KEYS:
        return None  # TLS, unix sockets and other shapes
    params = {k: v for k, v in conn.items() if k in _PLAIN_REDIS_KEYS and v is not None}
    params["socket_keepalive"] = True
    params.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
    params.setdefault("socket_timeout", COMMAND_TIMEOUT)
    params.pop("max_connections", None)
    return params


class AsyncClient:
    """One asyncio client of a backend's Redis, for the loop that first uses it."""

    __slots__ = ("_client", "_loop", "_params", "_retry_policy")

    @classmethod
    def of(cls, backend: Backend) -> AsyncClient | None:
        """Return the backend instance's client (made once); ``None``: no plain Redis."""
        found = vars(backend).get(_CLIENT_ATTR)
        if found is None:
            params = async_params(backend)
            found = cls(params, backend.retry_policy) if params is not None else False
            setattr(backend, _CLIENT_ATTR, found)
        return found or None

    def __init__(self, params: dict[str, Any], retry_policy: Mapping[str, Any]) -> None:
        self._params = params
        self._retry_policy = dict(retry_policy)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> Any:  # noqa: ANN401 - a redis.asyncio.Redis
        """Return the client for the running loop (made at first use on it)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aioredis  # noqa: PLC0415

            # A blocking pool: a thousand jobs in flight share the connections.
            pool = aioredis.BlockingConnectionPool(max_connections=64, timeout=None, **self._params)
            self._client, self._loop = aioredis.Redis(connection_pool=pool), loop
        return self._client

    async def call(self, what: str, make: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``make(client)``, retrying a lost connection as Celery's backend would.

        The policy is the backend's (``max_retries``, ``interval_start``,
        ``interval_step``, ``interval_max``); the last error is raised.
        """
        from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415
        from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: PLC0415

        policy = self._retry_policy
        retries = int(policy.get("max_retries") or 0)
        interval = float(policy.get("interval_start") or 0)
        step = float(policy.get("interval_step") or 1)
        ceiling = float(policy.get("interval_max") or 1)
        attempt = 0
        while True:
            try:
                return await make(self.client())
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if attempt >= retries:
                    raise
                attempt += 1
                logger.warning(
                    "%s: Redis unreachable (%s); retry %d/%d in %.1f s",
                    what,
                    exc,
                    attempt,
                    retries,
                    interval,
                )
                await asyncio.sleep(interval)
                interval = min(interval + step, ceiling)
