"""Which publish of a job id may run: ``replace`` and ``cancel`` that last.

``schedule(...).at(..., job_id=X, replace=True)`` publishes job X again for
its new time, under the same Celery task id. Revoking X would discard the new
message too, so instead every publish carries a token (in the ``jobify``
header) and a replace records the new token in the result backend under
``jobify-celery-publish-<id>``. A cancel records the moment it happened. A
worker about to run a message that waited (one with an ETA: a ``delay`` or
``at`` job, or a retry after its countdown) reads the record and skips the
message when a later replace or a cancel supersedes it.

Tokens start with their publish time (``<ns hex>.<random hex>``), so a record
supersedes only the publishes made before it: the id of a cancelled or
replaced job can be used again for a new job, which runs. The order is that of
the producers' clocks. A token without a time (from an older producer) is
superseded by any record that is not its own.

The record lives in the result store, not in any worker's memory, so it holds
across worker restarts, where Celery's revokes are forgotten (unless the
workers run with ``--statedb``). Backends that are not key-value stores
(database, rpc) cannot hold it; there a replace leaves both publishes to run,
and a cancel relies on Celery's revoke alone (documented).
"""

from __future__ import annotations

import enum
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

from celery.backends.base import BaseKeyValueStoreBackend

from jobify_celery._aiopool._green import await_only, in_job_greenlet
from jobify_celery._async_redis import AsyncClient

if TYPE_CHECKING:
    from celery.backends.base import Backend

__all__ = (
    "Verdict",
    "current_publish",
    "new_token",
    "publish_key",
    "record_cancel",
    "record_current_publish",
    "verdict",
)

_PREFIX: Final = "jobify-celery-publish-"
#: How long a record is kept beyond the job's planned time.
_MARGIN_SECONDS: Final = 86_400
#: A cancel's record: this prefix, then the moment of the cancel (ns, hex).
_CANCELLED: Final = "cancelled@"


class Verdict(enum.Enum):
    """What a worker does with a message that waited for its ETA."""

    RUN = "run"
    REPLACED = "replaced"
    CANCELLED = "cancelled"


def new_token(now_ns: int | None = None) -> str:
    """Return a publish token: the publish time, then a random part."""
    moment = time.time_ns() if now_ns is None else now_ns
    return f"{moment:x}.{uuid.uuid4().hex[:16]}"


def verdict(token: str, record: str | None) -> Verdict:
    """Decide whether the publish ``token`` may run, given the job's ``record``."""
    if record is None or record == token:
        return Verdict.RUN
    sent = _time_of(token)
    if record.startswith(_CANCELLED):
        cancelled_at = _hex(record[len(_CANCELLED) :])
        if sent is not None and cancelled_at is not None and sent > cancelled_at:
            return Verdict.RUN  # a new job that reuses a cancelled job's id
        return Verdict.CANCELLED
    current = _time_of(record)
    if sent is not None and current is not None and sent > current:
        return Verdict.RUN  # a new job that reuses a replaced job's id
    return Verdict.REPLACED


def _time_of(token: str) -> int | None:
    head, dot, _ = token.partition(".")
    return _hex(head) if dot else None


def _hex(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None


def publish_key(task_id: str) -> str:
    """Return the result-store key that holds a job's record."""
    return f"{_PREFIX}{task_id}"


def record_current_publish(backend: Backend, task_id: str, token: str, delay: float) -> bool:
    """Make ``token`` the job's current publish; ``False`` if the backend cannot."""
    return _record(backend, task_id, token, delay)


def record_cancel(backend: Backend, task_id: str, delay: float, now_ns: int | None = None) -> bool:
    """Supersede every publish of the job made until now; ``False`` if the backend cannot."""
    moment = time.time_ns() if now_ns is None else now_ns
    return _record(backend, task_id, f"{_CANCELLED}{moment:x}", delay)


def _record(backend: Backend, task_id: str, value: str, delay: float) -> bool:
    if not isinstance(backend, BaseKeyValueStoreBackend):
        return False
    key = backend.key_t(publish_key(task_id))
    expires = int(max(delay, 0) + _MARGIN_SECONDS)
    setter: Any = backend.set
    try:
        setter(key, value, expires=expires)
    except TypeError:  # key-value backends whose set() takes no expiry
        setter(key, value)
    return True


def current_publish(backend: Backend, task_id: str) -> str | None:
    """Return the job's record (a token, or a cancel), if one was made.

    In the asyncio pool the read waits on the loop, not on the thread.
    """
    if not isinstance(backend, BaseKeyValueStoreBackend):
        return None
    key = backend.key_t(publish_key(task_id))
    client = AsyncClient.of(backend) if in_job_greenlet() else None
    if client is not None:
        value = await_only(client.call("Reading a job's publish record", lambda r: r.get(key)))
    else:
        value = backend.get(key)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
