"""Build the messages of runs about to fall due, while beat would otherwise sleep.

Celery builds a run's message in about 0.1 ms (routing, headers, the
publish signals): ten thousand crons due on one second would cost a second of
building before the last is sent. Beat knows what falls due next, so when
many runs fall due within the next ``_AHEAD`` seconds (``_MANY``: more than
one slice of building), it builds their messages before, in short slices
between its ticks; at the due second it only sends them. Fewer runs are
built when due, as Celery's beat does.

A run is built for the state its cron has then (run number, planned time,
the entry itself). If anything changed by the time it falls due (a replaced
or cancelled cron, another run number), the prepared run is not used and
the run is built then, as without preparation. Celery's publish signals fire
when a run is built, up to ``_AHEAD`` seconds before it is sent; a task's
relative ``expires`` counts from then.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from typing import TYPE_CHECKING, Final

from jobify_celery._cron_plan import next_tick
from jobify_celery._cron_publish import CronRun

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobify_celery._capture import Outgoing
    from jobify_celery._cron_book import CronBook, Entry
    from jobify_celery._cron_plan import Tick

__all__ = ("Preparer",)

logger = logging.getLogger("jobify_celery.beat")

#: Runs due within this many seconds are built ahead.
_AHEAD: Final = 2.0
#: One slice of building lasts about this long (a due cron waits at most that).
_SLICE: Final = 0.02
#: Built ahead only when at least this many runs fall due within ``_AHEAD``.
_MANY: Final = 200
#: How often the book is looked at for runs coming up.
_SCAN_EVERY: Final = 0.25


class Preparer:
    """Keeps the runs due in the next seconds built, a slice at a time."""

    __slots__ = ("_book", "_build", "_next_scan", "_queue")

    def __init__(self, book: CronBook, build: Callable[[Entry, Tick, str], list[Outgoing]]) -> None:
        self._book = book
        self._build = build
        #: Entries to build, with the heap version they had when found.
        self._queue: collections.deque[tuple[Entry, int]] = collections.deque()
        self._next_scan = 0.0

    @property
    def busy(self) -> bool:
        """Tell whether runs coming up wait to be built (beat should not sleep)."""
        return bool(self._queue)

    def clear(self) -> None:
        """Forget the runs waiting to be built (the book was cleared)."""
        self._queue.clear()
        self._next_scan = 0.0

    def work(self) -> None:
        """Build runs coming up for about one slice."""
        started = time.monotonic()
        if not self._queue and started >= self._next_scan:
            self._next_scan = started + _SCAN_EVERY
            coming = self._book.upcoming(time.time() + _AHEAD)
            if len(coming) >= _MANY:
                self._queue.extend((entry, entry.version) for entry in coming if not _ready(entry))
        queue = self._queue
        while queue and time.monotonic() - started < _SLICE:
            entry, version = queue.popleft()
            if self._book.get(entry.job_id) is not entry or entry.version != version:
                continue  # fired, replaced or removed meanwhile
            tick = next_tick(entry.state)
            task_id = uuid.uuid4().hex
            try:
                messages = self._build(entry, tick, task_id)
            except Exception:  # built again when due, and its failure logged then
                logger.debug(
                    "Cron %r: run %d not built ahead", entry.job_id, tick.run, exc_info=True
                )
                continue
            entry.prepared = CronRun(entry.job_id, tick.run, tick.planned, task_id, messages)


def _ready(entry: Entry) -> bool:
    prepared = entry.prepared
    if prepared is None:
        return False
    tick = next_tick(entry.state)
    return prepared.run == tick.run and prepared.planned == tick.planned


def take_prepared(entry: Entry, tick: Tick) -> CronRun | None:
    """Return the run built ahead for ``tick``, if it was; the entry lets go of it."""
    prepared, entry.prepared = entry.prepared, None
    if prepared is not None and prepared.run == tick.run and prepared.planned == tick.planned:
        return prepared
    return None
