"""What the bridge needs of a Jobify storage beyond Jobify's own interface, per storage.

Jobify's ``Storage`` can list every schedule, upsert and delete. Keeping
tens of thousands of run-time crons takes two more things, each costing one
statement rather than a read of every record:

* ``add_if_absent(record)``: insert unless the job id is stored, atomically
  (two producers adding one id at once: exactly one wins);
* ``get_many(job_ids)``: read some records by id (beat following a change).

``cron_store_for(storage)`` gives them for Jobify's ``SQLiteStorage``, for
jobify-db's ``AsyncpgStorage`` (PostgreSQL) and for any storage that has the
two methods itself (``add_schedule_if_absent``, ``get_schedules_by_id``); for
another storage it returns ``None`` and the bridge falls back to reading
every record (and says so once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from jobify_celery._jobify import (
    ScheduledJob,
    is_jobify_sqlite,
    sqlite_add_if_absent,
    sqlite_get_many,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ("CronStore", "asyncpg_table", "cron_store_for")


class CronStore(Protocol):
    """One-statement operations on a storage's schedules."""

    async def add_if_absent(self, record: ScheduledJob) -> bool:
        """Insert ``record`` unless its job id is stored; tell whether it was inserted."""
        ...

    async def get_many(self, job_ids: Sequence[str]) -> list[ScheduledJob]:
        """Read the stored records among ``job_ids``."""
        ...


class _Methods:
    """A storage that has both operations itself."""

    __slots__ = ("_add", "_get")

    def __init__(
        self,
        add: Callable[[ScheduledJob], Awaitable[bool]],
        get: Callable[[Sequence[str]], Awaitable[Sequence[ScheduledJob]]],
    ) -> None:
        self._add = add
        self._get = get

    async def add_if_absent(self, record: ScheduledJob) -> bool:
        return bool(await self._add(record))

    async def get_many(self, job_ids: Sequence[str]) -> list[ScheduledJob]:
        return list(await self._get(job_ids))


class _JobifySQLite:
    __slots__ = ("_storage",)

    def __init__(self, storage: Any) -> None:  # noqa: ANN401 - Jobify's SQLiteStorage
        self._storage = storage

    async def add_if_absent(self, record: ScheduledJob) -> bool:
        return await sqlite_add_if_absent(self._storage, record)

    async def get_many(self, job_ids: Sequence[str]) -> list[ScheduledJob]:
        return await sqlite_get_many(self._storage, list(job_ids))


class _Asyncpg:
    """jobify-db's ``AsyncpgStorage``: its pool, and its table (validated by jobify-db)."""

    __slots__ = ("_storage", "_table")

    def __init__(self, storage: Any, table: str) -> None:  # noqa: ANN401
        self._storage = storage
        self._table = table

    async def add_if_absent(self, record: ScheduledJob) -> bool:
        query = (
            f"INSERT INTO {self._table} (job_id, name, message, status, next_run_at) "  # noqa: S608 - a validated table name
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO NOTHING RETURNING job_id"
        )
        inserted = await self._storage.pool.fetchval(
            query,
            record.job_id,
            record.name,
            record.message,
            str(record.status),
            record.next_run_at,
        )
        return inserted is not None

    async def get_many(self, job_ids: Sequence[str]) -> list[ScheduledJob]:
        from jobify import JobStatus  # noqa: PLC0415

        if not job_ids:
            return []
        query = (
            f"SELECT job_id, name, message, status, next_run_at FROM {self._table} "  # noqa: S608 - a validated table name
            "WHERE job_id = ANY($1::TEXT[])"
        )
        rows = await self._storage.pool.fetch(query, list(job_ids))
        return [
            ScheduledJob(
                job_id=row["job_id"],
                name=row["name"],
                message=bytes(row["message"]),
                status=JobStatus(row["status"]),
                next_run_at=row["next_run_at"],
            )
            for row in rows
        ]


def cron_store_for(storage: object) -> CronStore | None:
    """Return the one-statement operations for ``storage``, or ``None`` if unknown."""
    add = getattr(storage, "add_schedule_if_absent", None)
    get = getattr(storage, "get_schedules_by_id", None)
    if callable(add) and callable(get):
        return _Methods(add, get)
    if is_jobify_sqlite(storage):
        return _JobifySQLite(storage)
    table = asyncpg_table(storage)
    if table is not None:
        return _Asyncpg(storage, table)
    return None


def asyncpg_table(storage: object) -> str | None:
    """Return the table of a jobify-db ``AsyncpgStorage`` (a private attribute), if it is one."""
    try:
        from jobify_db.postgresql.asyncpg import AsyncpgStorage  # noqa: PLC0415
    except ImportError:
        return None
    if not isinstance(storage, AsyncpgStorage):
        return None
    table = getattr(storage, "_table_name", None)
    return table if isinstance(table, str) else None
