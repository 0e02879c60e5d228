"""Several processes may start on a PostgreSQL database whose cron table does not exist yet.

jobify-db's ``AsyncpgStorage.startup`` runs ``CREATE TABLE IF NOT EXISTS``.
PostgreSQL checks "if not exists" before it writes the table's catalog rows, so
two sessions creating one table at the same moment both pass the check, and
the later one fails once the first commits: on a catalog unique index
(``UniqueViolationError`` on ``pg_type``), or with ``DuplicateTableError`` or
``DuplicateObjectError`` (the table's row type), depending on timing. A deployment
whose producers and beats start together on a fresh database would lose one
of them to that. ``guard_table_creation`` makes such a failure mean what it
means, "the table exists now": the storage is started again, which keeps the
pool it opened and repeats the statement, now a no-op. Any other error, or
the same one twice, goes to the caller unchanged.
"""

from __future__ import annotations

import logging

from jobify_celery._cron_store import asyncpg_table

__all__ = ("guard_table_creation",)

logger = logging.getLogger(__name__)

_GUARDED = "_jobify_celery_guarded"


def guard_table_creation(storage: object) -> None:
    """Make a jobify-db ``AsyncpgStorage`` survive a concurrent creation of its table."""
    if asyncpg_table(storage) is None:
        return
    startup = getattr(storage, "startup")  # noqa: B009 - typed as object
    if getattr(startup, _GUARDED, False):
        return
    from asyncpg.exceptions import (  # noqa: PLC0415
        DuplicateObjectError,
        DuplicateTableError,
        UniqueViolationError,
    )

    created_meanwhile = (UniqueViolationError, DuplicateTableError, DuplicateObjectError)

    async def guarded_startup() -> None:
        try:
            await startup()
        except created_meanwhile as exc:
            logger.debug("Another process created the cron table at this moment (%s)", exc)
            await startup()

    setattr(guarded_startup, _GUARDED, True)
    vars(storage)["startup"] = guarded_startup
