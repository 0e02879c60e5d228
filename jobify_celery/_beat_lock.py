"""One firing beat per app: a lease in Redis.

Several ``celery beat`` processes may run for one app (a standby on another
host); only the holder of the lease fires ticks. The lease is a Redis key
``jobify-celery:beat-lock:<app name>`` set with NX and a TTL, renewed on every
beat tick (at least twice a second) by its holder only; when the holder dies,
the key expires and a standby takes over within ``ttl`` seconds. The Redis
is the app's result backend. Without one, every beat fires: run one beat.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from celery import Celery

__all__ = ("BeatLock", "NoLock", "RedisLock", "lock_for")

logger = logging.getLogger("jobify_celery.beat")

LOCK_TTL_SECONDS: Final = 3.0

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class BeatLock(Protocol):
    """Tells a beat whether it may fire."""

    def hold(self) -> bool:
        """Take or renew the lease; tell whether this beat holds it."""
        ...

    def release(self) -> None:
        """Give the lease up (on a clean stop)."""
        ...


class NoLock:
    """Every beat fires: for apps without a Redis result backend."""

    def hold(self) -> bool:
        """Report the lease held: there is none to share."""
        return True

    def release(self) -> None:
        """Nothing to give up."""


class RedisLock:
    """A lease on a Redis key, renewed by its holder only."""

    def __init__(self, client: Any, key: str, ttl: float = LOCK_TTL_SECONDS) -> None:  # noqa: ANN401
        self._client = client
        self._key = key
        self._ttl_ms = int(ttl * 1000)
        self._token = uuid.uuid4().hex
        self._held = False
        self._unreachable = False

    def hold(self) -> bool:
        """Renew the lease if held, else try to take it."""
        client = self._client
        try:
            if self._held and client.eval(_RENEW, 1, self._key, self._token, self._ttl_ms):
                return True
            self._held = bool(client.set(self._key, self._token, nx=True, px=self._ttl_ms))
        except Exception as exc:
            # Once per outage with its cause; then quietly, twice a second.
            if not self._unreachable:
                logger.warning("Cannot reach Redis for the beat lock", exc_info=True)
            else:
                logger.debug("Redis still unreachable for the beat lock: %s", exc)
            self._unreachable = True
            self._held = False
            return False
        if self._unreachable:
            logger.info("Redis answers again for the beat lock")
            self._unreachable = False
        return self._held

    def release(self) -> None:
        """Delete the key if this beat holds it."""
        if self._held:
            try:
                self._client.eval(_RELEASE, 1, self._key, self._token)
            except Exception:
                logger.warning("Cannot release the beat lock", exc_info=True)
            self._held = False


def lock_for(celery_app: Celery) -> BeatLock:
    """Use the result backend's Redis for the lease, if it is Redis."""
    try:
        from celery.backends.redis import RedisBackend  # noqa: PLC0415
    except ImportError:  # pragma: no cover - redis extra not installed
        RedisBackend = None  # noqa: N806
    backend = celery_app.backend
    if RedisBackend is not None and isinstance(backend, RedisBackend):
        return RedisLock(backend.client, f"jobify-celery:beat-lock:{celery_app.main}")
    logger.warning(
        "No Redis result backend to hold the beat lock: every running beat "
        "fires ticks. Run one beat only."
    )
    return NoLock()
