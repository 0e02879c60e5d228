"""One-statement cron operations on Jobify's SQLite storage (a real file, no server)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobify import JobStatus
from jobify.storage import SQLiteStorage

from jobify_celery._cron_store import cron_store_for
from jobify_celery._jobify import ScheduledJob

if TYPE_CHECKING:
    from pathlib import Path


def record(job_id: str, message: bytes = b"m") -> ScheduledJob:
    return ScheduledJob(
        job_id=job_id,
        name="route",
        message=message,
        status=JobStatus.SCHEDULED,
        next_run_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_sqlite_inserts_only_an_absent_id_and_reads_by_id(tmp_path: Path) -> None:
    async def main() -> tuple[bool, bool, list[ScheduledJob]]:
        storage = SQLiteStorage(tmp_path / "crons.db")
        await storage.startup()
        try:
            store = cron_store_for(storage)
            assert store is not None
            first = await store.add_if_absent(record("a", b"first"))
            second = await store.add_if_absent(record("a", b"second"))
            found = await store.get_many(["a", "missing"])
        finally:
            await storage.shutdown()
        return first, second, found

    first, second, found = asyncio.run(main())
    assert (first, second) == (True, False)
    assert [(r.job_id, r.message) for r in found] == [("a", b"first")]  # the first one kept


def test_many_concurrent_adds_of_one_id_have_one_winner(tmp_path: Path) -> None:
    async def main() -> list[bool]:
        storages = [SQLiteStorage(tmp_path / "crons.db") for _ in range(4)]
        for storage in storages:
            await storage.startup()
        try:
            stores = [cron_store_for(s) for s in storages]
            return await asyncio.gather(
                *(store.add_if_absent(record("race")) for store in stores if store is not None)
            )
        finally:
            for storage in storages:
                await storage.shutdown()

    assert sorted(asyncio.run(main())) == [False, False, False, True]


class _Own:
    async def add_schedule_if_absent(self, _record: ScheduledJob) -> bool:
        return True

    async def get_schedules_by_id(self, _ids: list[str]) -> list[ScheduledJob]:
        return []


def test_a_storage_with_the_methods_itself_is_used_and_others_are_not() -> None:
    assert cron_store_for(_Own()) is not None
    assert cron_store_for(object()) is None


def test_jobify_dbs_postgresql_storage_is_known_by_its_table() -> None:
    from jobify_db.postgresql.asyncpg import AsyncpgStorage

    # No connection yet: the storage is only looked at.
    storage = AsyncpgStorage("postgresql://nobody@127.0.0.1:1/none", table_name="my_crons")
    store = cron_store_for(storage)
    assert store is not None
    assert store._table == "my_crons"  # type: ignore[attr-defined] # the private name it relies on
