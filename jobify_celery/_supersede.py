"""Which publish of a job id is current, so ``replace`` keeps the job's id.

``schedule(...).at(..., job_id=X, replace=True)`` publishes job X again for
its new time, under the same Celery task id. Revoking X would discard the new
message too, so instead every publish carries a token (in the ``jobify``
header) and a replace records the new token in the result backend under
``jobify-celery-publish-<id>``. A worker about to run a scheduled message
(one with an ETA) compares tokens and skips a superseded one. The record
lives in the result store, not in any worker's memory: it holds across worker
restarts. Backends that are not key-value stores (database, rpc) cannot hold
it; there a replace leaves both publishes to run (documented).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from celery.backends.base import BaseKeyValueStoreBackend

if TYPE_CHECKING:
    from celery.backends.base import Backend

__all__ = ("current_publish", "publish_key", "record_current_publish")

_PREFIX: Final = "jobify-celery-publish-"
#: How long a replace is remembered beyond the job's planned time.
_MARGIN_SECONDS: Final = 86_400


def publish_key(task_id: str) -> str:
    """Return the result-store key that names a job's current publish."""
    return f"{_PREFIX}{task_id}"


def record_current_publish(backend: Backend, task_id: str, token: str, delay: float) -> bool:
    """Make ``token`` the job's current publish; ``False`` if the backend cannot."""
    if not isinstance(backend, BaseKeyValueStoreBackend):
        return False
    key = backend.key_t(publish_key(task_id))
    expires = int(max(delay, 0) + _MARGIN_SECONDS)
    setter: Any = backend.set
    try:
        setter(key, token, expires=expires)
    except TypeError:  # key-value backends whose set() takes no expiry
        setter(key, token)
    return True


def current_publish(backend: Backend, task_id: str) -> str | None:
    """Return the token of the job's current publish, if one was recorded."""
    if not isinstance(backend, BaseKeyValueStoreBackend):
        return None
    value = backend.get(backend.key_t(publish_key(task_id)))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
