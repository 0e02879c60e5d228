"""The Jobify storage in a beat process: beat starts, and goes on, while the storage is away.

Jobify starts the storage with the app, and a storage that cannot connect
then (jobify-db's PostgreSQL pool, say) fails the whole start; a Jobify app
cannot be started twice in a process. Beat is the only user of the storage in
its process (no local timers there: beat fires every cron), so in a beat the
app's storage is swapped (``install``) for:

* ``InertStorage``, what Jobify itself sees: its start tries the real
  storage once and never fails the app; its reads are empty and its writes
  ignored (the beat engine writes the declared crons itself);
* ``ReadyStorage``, what the beat engine uses: every call first makes sure
  the real storage has started, trying again at most every few seconds, and
  fails with ``StorageUnavailableError`` while it has not. Beat fires what it
  knows meanwhile, and says why it knows nothing yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from jobify_celery._cron_store import cron_store_for
from jobify_celery._jobify import replace_storage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobify import Jobify

    from jobify_celery._cron_store import CronStore
    from jobify_celery._jobify import ScheduledJob

__all__ = ("InertStorage", "ReadyStorage", "StorageUnavailableError", "install")

logger = logging.getLogger("jobify_celery.beat")

#: A failed start is tried again no sooner than this.
RETRY_SECONDS: Final = 5.0
#: A start that takes longer has failed.
START_TIMEOUT: Final = 10.0


class StorageUnavailableError(ConnectionError):
    """The storage has not started yet: it did not answer."""


class ReadyStorage:
    """The real storage, started at its first use (and again after a failed start)."""

    def __init__(self, wrapped: Any) -> None:  # noqa: ANN401 - a Jobify Storage
        self.wrapped = wrapped
        self._started = False
        self._next_try = 0.0
        self._failed = False
        self._store = cron_store_for(wrapped)

    @property
    def has_store(self) -> bool:
        """Tell whether the storage offers one-statement reads by id (``_cron_store``)."""
        return self._store is not None

    async def ready(self) -> None:
        """Start the storage if needed; raise ``StorageUnavailableError`` if it does not."""
        if self._started:
            return
        if time.monotonic() < self._next_try:
            msg = "the Jobify storage has not started (it did not answer)"
            raise StorageUnavailableError(msg)
        try:
            await asyncio.wait_for(self.wrapped.startup(), START_TIMEOUT)
        except Exception as exc:
            self._next_try = time.monotonic() + RETRY_SECONDS
            if not self._failed:
                logger.error(  # noqa: TRY400 - the cause is in the message
                    "The Jobify storage does not answer (%s: %s): beat fires no stored cron "
                    "until it does, and tries again every %.0f s.",
                    type(exc).__name__,
                    exc,
                    RETRY_SECONDS,
                )
            self._failed = True
            msg = f"the Jobify storage did not start: {type(exc).__name__}: {exc}"
            raise StorageUnavailableError(msg) from exc
        if self._failed:
            logger.info("The Jobify storage started")
        self._started = True

    async def shutdown(self) -> None:
        """Stop the storage, if it started."""
        if self._started:
            self._started = False
            await self.wrapped.shutdown()

    async def get_schedules(self) -> Sequence[ScheduledJob]:
        await self.ready()
        found: Sequence[ScheduledJob] = await self.wrapped.get_schedules()
        return found

    async def add_schedule(self, *scheduled: ScheduledJob) -> None:
        await self.ready()
        await self.wrapped.add_schedule(*scheduled)

    async def delete_schedule_many(self, job_ids: Sequence[str]) -> None:
        await self.ready()
        await self.wrapped.delete_schedule_many(job_ids)

    async def get_many(self, job_ids: Sequence[str]) -> list[ScheduledJob]:
        """Read records by id (requires ``has_store``)."""
        await self.ready()
        store: CronStore | None = self._store
        if store is None:
            msg = "this storage cannot read records by id"
            raise TypeError(msg)
        return await store.get_many(job_ids)


class InertStorage:
    """What Jobify sees of the storage in a beat process: starts, never fails, holds nothing."""

    def __init__(self, ready: ReadyStorage) -> None:
        self.ready = ready

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the real storage's attributes
        return getattr(self.ready.wrapped, name)

    async def startup(self) -> None:
        """Try the real storage once; a failure is the beat engine's to report and retry."""
        try:
            await self.ready.ready()
        except StorageUnavailableError:
            return

    async def shutdown(self) -> None:
        await self.ready.shutdown()

    async def get_schedules(self) -> list[ScheduledJob]:
        return []

    async def add_schedule(self, *scheduled: ScheduledJob) -> None:
        del scheduled

    async def delete_schedule(self, job_id: str) -> None:
        del job_id

    async def delete_schedule_many(self, job_ids: Sequence[str]) -> None:
        del job_ids


def install(app: Jobify) -> ReadyStorage:
    """Swap the app's storage as described above (once); return the beat engine's side."""
    current = app.configs.storage
    if isinstance(current, InertStorage):
        return current.ready
    ready = ReadyStorage(current)
    replace_storage(app, InertStorage(ready))
    return ready
