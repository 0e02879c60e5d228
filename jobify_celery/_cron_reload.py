"""Beat's read of every stored cron: off its thread, then taken in a slice at a time.

With a hundred thousand crons stored, reading them all takes a second or
more, and taking them in (a digest per record, most unchanged) half a second
more. Beat does this at start, every few minutes and after a lost feed; were
it done on beat's own thread, every cron due meanwhile would fire that late.
So the storage is read as a task on the loop while beat goes on firing what
it knows, and the records are taken in a slice (``_SLICE`` seconds) per tick.

The records are a snapshot of the time the read started. Crons the feed
announced meanwhile (``touch``) were read again since, so the snapshot's
older records of them are skipped.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence
    from concurrent.futures import Future

    from jobify_celery._cron_feed import FeedPosition
    from jobify_celery._jobify import ScheduledJob

__all__ = ("FullRead",)

#: A full read that takes longer has failed (a storage that stopped answering).
READ_TIMEOUT: Final = 120.0
#: Records are taken in for about this long per tick.
_SLICE: Final = 0.02

#: A definition to take in, with beat's state record of it (if any).
Item = tuple[str, "ScheduledJob", "ScheduledJob | None"]


class FullRead:
    """One read of every stored record at a time: reading, then taking in."""

    __slots__ = ("_future", "_items", "_submit", "declared", "position", "started", "touched")

    def __init__(self, submit: Callable[[Awaitable[Any]], Future[Any]]) -> None:
        self._submit = submit
        self._future: Future[Sequence[ScheduledJob]] | None = None
        self._items: collections.deque[Item] = collections.deque()
        #: Crons the feed announced since the read started (the snapshot is older).
        self.touched: set[str] = set()
        self.position: FeedPosition | None = None
        self.started = 0.0
        #: Whether the crons declared in code are to be written (beat's first read).
        self.declared = False

    @property
    def active(self) -> bool:
        """Tell whether a read is under way (reading or taking in)."""
        return self._future is not None or bool(self._items)

    @property
    def reading(self) -> bool:
        """Tell whether the storage is still being read."""
        return self._future is not None

    def start(
        self,
        read: Callable[[], Awaitable[Sequence[ScheduledJob]]],
        position: FeedPosition,
        *,
        declared: bool,
    ) -> None:
        """Start reading every record on the loop; beat goes on meanwhile."""
        self.forget()
        self.position = position
        self.declared = declared
        self.started = time.monotonic()

        async def read_all() -> Sequence[ScheduledJob]:
            return await asyncio.wait_for(read(), READ_TIMEOUT)

        self._future = self._submit(read_all())

    def outcome(self) -> Sequence[ScheduledJob] | BaseException | None:
        """Return the records (or why the read failed) once read; None while reading."""
        future = self._future
        if future is None or not future.done():
            return None
        self._future = None
        if future.cancelled():
            return asyncio.CancelledError("the read of every stored cron was cancelled")
        error = future.exception()
        return error if error is not None else future.result()

    def take_in(self, items: Iterator[Item]) -> None:
        """Queue the definitions read, to be taken in by ``slice``."""
        self._items.extend(items)

    def slice(self) -> Iterator[Item]:
        """Yield queued definitions for about one slice, skipping those touched since."""
        items = self._items
        touched = self.touched
        ends = time.monotonic() + _SLICE
        while items and time.monotonic() < ends:
            item = items.popleft()
            if item[0] not in touched:
                yield item

    def touch(self, job_id: str) -> None:
        """Note a cron the feed announced (its snapshot record is stale)."""
        if self.active:
            self.touched.add(job_id)

    def forget(self) -> None:
        """Drop the read under way (the lock was lost, or a new one starts)."""
        if self._future is not None:
            self._future.cancel()
        self._future = None
        self._items.clear()
        self.touched = set()
