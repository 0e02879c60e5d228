"""Producers and beats starting together on a PostgreSQL database without the cron table.

PostgreSQL's ``CREATE TABLE IF NOT EXISTS`` is not atomic across sessions: of
six jobify-db storages started at one moment on a new table, four failed
with ``UniqueViolationError`` in 10 of 10 rounds before the guard.
"""

from __future__ import annotations

import asyncio
import uuid

from celery import Celery
from jobify import Jobify
from jobify_db.postgresql.asyncpg import AsyncpgStorage

from jobify_celery import JobifyCelery
from jobify_celery._pg_startup import guard_table_creation
from tests.helpers import drop_postgres_table
from tests.servers import POSTGRES_URL, require_postgres

ROUNDS = 10
STARTERS = 6


def test_storages_starting_at_once_on_a_new_table_all_start() -> None:
    require_postgres(POSTGRES_URL)

    async def one_round(table: str) -> list[BaseException | None]:
        storages = [
            AsyncpgStorage(POSTGRES_URL, table_name=table, min_size=1, max_size=1)
            for _ in range(STARTERS)
        ]
        for storage in storages:
            guard_table_creation(storage)
        outcomes = await asyncio.gather(
            *(storage.startup() for storage in storages), return_exceptions=True
        )
        rows = await storages[0].pool.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
        assert rows == 0
        for storage in storages:
            await storage.shutdown()
        return [outcome for outcome in outcomes if outcome is not None]

    for _ in range(ROUNDS):
        table = f"pg_start_{uuid.uuid4().hex[:10]}"
        try:
            assert asyncio.run(one_round(table)) == []
        finally:
            drop_postgres_table(table)


def test_the_bridge_guards_its_apps_postgresql_storage() -> None:
    storage = AsyncpgStorage(POSTGRES_URL, table_name="never_created")
    plain_startup = storage.startup
    app = Jobify(storage=storage)
    JobifyCelery(app, Celery("pg-startup-guard", broker="memory://"))
    assert storage.startup != plain_startup
    guarded = storage.startup
    guard_table_creation(storage)
    assert storage.startup is guarded
