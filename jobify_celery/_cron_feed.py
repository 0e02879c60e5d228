"""The cron change feed: producers say which crons changed, beat reads only those.

A producer that adds, replaces or cancels a run-time cron appends the cron's
job id to a Redis stream on the result backend
(``jobify-celery:cron-feed:<celery app name>``) after writing the storage.
Beat reads the entries after the last one it saw, a few each tick, and reads
those crons' records from the storage: a change is followed within a tick,
whatever the number of stored crons.

The feed is a hint, the storage the truth: beat also reads every record at
start and at a rare interval, and at once when it cannot trust the feed
(``Reading.lost``): entries it had not read were trimmed away, or Redis came
back empty (restarted without persistence, or a different server).

``FeedPosition`` and ``after`` are pure; ``CronFeed`` does the Redis calls
with the backend's synchronous client (beat is synchronous; producers call
it off their loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from celery import Celery

__all__ = ("CronFeed", "FeedPosition", "Reading", "after", "feed_for")

#: Entries the stream keeps (approximately): far more than beat reads per tick.
MAX_ENTRIES: Final = 100_000
#: Entries beat reads at most per call.
READ_BATCH: Final = 10_000
_FIELD: Final = b"job"


@dataclass(frozen=True, slots=True, order=True)
class FeedPosition:
    """A stream entry id, ``<ms>-<seq>``, ordered as Redis orders them."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: bytes | str) -> FeedPosition:
        text = raw.decode() if isinstance(raw, bytes) else raw
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


START: Final = FeedPosition(0, 0)


def after(position: FeedPosition) -> str:
    """Return the exclusive start of an ``XRANGE`` from ``position``."""
    return f"({position}"


@dataclass(frozen=True, slots=True)
class Reading:
    """What one read of the feed gave."""

    job_ids: tuple[str, ...]
    position: FeedPosition
    #: Entries may have been missed: read every record.
    lost: bool = False
    #: More entries are waiting (the batch was full).
    more: bool = False


class CronFeed:
    """The feed of one Celery app, on its Redis result backend."""

    __slots__ = ("_client", "key")

    def __init__(self, client: Any, key: str) -> None:  # noqa: ANN401 - a redis.Redis
        self._client = client
        self.key = key

    def announce(self, job_ids: Sequence[str]) -> None:
        """Append changed crons' job ids (after the storage was written)."""
        if not job_ids:
            return
        with self._client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.xadd(self.key, {_FIELD: job_id}, maxlen=MAX_ENTRIES, approximate=True)
            pipe.execute()

    def position(self) -> FeedPosition:
        """Return the last entry written so far (``0-0`` for none): read from there on."""
        info = self._stream_info()
        if info is None:
            return START
        return FeedPosition.parse(info["last-generated-id"])

    def read(self, since: FeedPosition) -> Reading:
        """Return the job ids announced after ``since``, and where to read next."""
        info = self._stream_info()
        if info is None:
            # No stream: nothing announced yet, or Redis lost it.
            return Reading((), START, lost=since != START)
        last = FeedPosition.parse(info["last-generated-id"])
        if last < since:
            return Reading((), last, lost=True)  # the stream was written anew
        trimmed = info.get("max-deleted-entry-id")
        if trimmed is not None and since < FeedPosition.parse(trimmed):
            return Reading((), last, lost=True)
        if last <= since:
            return Reading((), since)
        entries = self._client.xrange(self.key, min=after(since), count=READ_BATCH)
        job_ids = tuple(
            value.decode() if isinstance(value, bytes) else str(value)
            for _, fields in entries
            if (value := fields.get(_FIELD)) is not None
        )
        position = FeedPosition.parse(entries[-1][0]) if entries else since
        return Reading(job_ids, position, more=len(entries) >= READ_BATCH)

    def _stream_info(self) -> dict[str, Any] | None:
        from redis.exceptions import ResponseError  # noqa: PLC0415

        try:
            raw = self._client.xinfo_stream(self.key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def feed_for(celery_app: Celery) -> CronFeed | None:
    """Return the app's cron feed, or ``None`` when its result backend is not Redis."""
    backend = celery_app.backend
    client = getattr(backend, "client", None)
    if client is None or not callable(getattr(client, "xadd", None)):
        return None
    return CronFeed(client, f"jobify-celery:cron-feed:{celery_app.main}")
