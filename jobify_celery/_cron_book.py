"""The crons a beat fires, ordered by when each is due next. Pure data, no I/O.

A beat may follow a hundred thousand crons of which a handful fire each
second. The book keeps them by job id and in a heap by next run time, so
finding what is due, and how long to sleep, costs the due ones only. A cron
replaced or removed leaves its old heap item behind, recognized as stale by a
version number and dropped when it reaches the top.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from jobify import Cron

    from jobify_celery._cron_plan import CronState
    from jobify_celery._cron_publish import CronRun
    from jobify_celery._jobify import CronParser

__all__ = ("CronBook", "Entry")


@dataclass(slots=True)
class Entry:
    """One cron: its definition, how to publish it, where it stands."""

    job_id: str
    route: str
    cron: Cron
    parser: CronParser
    #: Of the stored definition: a changed one is loaded again.
    digest: str
    #: The stored arguments, as the app's dumper wrote them.
    arguments: dict[str, Any]
    state: CronState
    #: The Celery ``args``/``kwargs`` of its runs, encoded at the first run.
    call: tuple[list[Any], dict[str, Any]] | None = None
    #: Its next run, its messages built ahead of time (``_cron_prepare``).
    prepared: CronRun | None = field(default=None, compare=False)
    version: int = field(default=0, compare=False)


class CronBook:
    """Entries by job id, and a heap of (next run, version, job id)."""

    __slots__ = ("_entries", "_heap", "_pending", "_versions")

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._versions = itertools.count(1)
        #: Job ids of entries with runs whose outcome is not known yet.
        self._pending: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def get(self, job_id: str) -> Entry | None:
        """Return the entry of ``job_id``, if the book has it."""
        return self._entries.get(job_id)

    def job_ids(self) -> set[str]:
        """Return the job ids of every entry."""
        return set(self._entries)

    def put(self, entry: Entry) -> None:
        """Add ``entry``, or replace the entry of its job id."""
        self._entries[entry.job_id] = entry
        if entry.state.pending:
            self._pending.add(entry.job_id)
        else:
            self._pending.discard(entry.job_id)
        self.reschedule(entry)

    def remove(self, job_id: str) -> Entry | None:
        """Drop the entry of ``job_id`` (its heap item goes stale)."""
        self._pending.discard(job_id)
        return self._entries.pop(job_id, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._heap.clear()
        self._pending.clear()

    def reschedule(self, entry: Entry) -> None:
        """File ``entry`` again at its state's next run (after a run or a change)."""
        entry.version = next(self._versions)
        if entry.state.active(entry.cron):
            item = (entry.state.next_run_at.timestamp(), entry.version, entry.job_id)
            heapq.heappush(self._heap, item)

    def due(self, now: datetime, limit: int) -> list[Entry]:
        """Take up to ``limit`` entries due at ``now``, soonest first.

        They leave the heap: the caller fires each one and reschedules it.
        """
        cutoff = now.timestamp()
        taken: list[Entry] = []
        heap = self._heap
        while heap and len(taken) < limit:
            when, version, job_id = heap[0]
            entry = self._entries.get(job_id)
            if entry is None or entry.version != version:
                heapq.heappop(heap)  # stale: replaced, removed or rescheduled
                continue
            if when > cutoff:
                break
            heapq.heappop(heap)
            taken.append(entry)
        return taken

    def upcoming(self, until: float) -> list[Entry]:
        """Return the entries due by ``until`` (POSIX time), soonest first; nothing leaves.

        Those items form the top of the heap, so they are found without
        looking at the others.
        """
        heap = self._heap
        found: list[tuple[float, int, Entry]] = []
        stack = [0] if heap else []
        while stack:
            index = stack.pop()
            when, version, job_id = heap[index]
            if when > until:
                continue
            entry = self._entries.get(job_id)
            if entry is not None and entry.version == version:
                found.append((when, version, entry))
            stack.extend(child for child in (2 * index + 1, 2 * index + 2) if child < len(heap))
        found.sort(key=lambda item: item[:2])
        return [entry for _, _, entry in found]

    def next_due(self) -> float | None:
        """Return the POSIX time of the soonest run, ``None`` when nothing is due ever."""
        heap = self._heap
        while heap:
            when, version, job_id = heap[0]
            entry = self._entries.get(job_id)
            if entry is not None and entry.version == version:
                return when
            heapq.heappop(heap)
        return None

    def mark_pending(self, entry: Entry) -> None:
        """Note that ``entry`` has runs whose outcome beat must read."""
        if entry.state.pending:
            self._pending.add(entry.job_id)

    def pending(self) -> list[Entry]:
        """Return the entries with runs whose outcome is not known yet."""
        found = []
        for job_id in list(self._pending):
            entry = self._entries.get(job_id)
            if entry is None or not entry.state.pending:
                self._pending.discard(job_id)
                continue
            found.append(entry)
        return found
