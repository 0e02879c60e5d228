"""Helpers the integration and fault tests share (no fixtures here: see conftest.py)."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from amqp.exceptions import NotFound
from kombu import Connection

from tests.servers import BROKER_URL

if TYPE_CHECKING:
    from collections.abc import Callable


def wait_until(check: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            msg = f"{what}: not reached in {timeout:.0f} s"
            raise AssertionError(msg)
        time.sleep(0.05)


def queue_depth(queue: str) -> int:
    """Messages ready in ``queue``, read straight from the shared RabbitMQ (0: no queue)."""
    with Connection(BROKER_URL) as conn:
        try:
            _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
        except NotFound:
            return 0
        return int(count)


def delete_queue(queue: str) -> None:
    with Connection(BROKER_URL) as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_delete(queue)


def drop_postgres_table(table: str) -> None:
    """Drop a test's table from the shared test database (``POSTGRES_URL``)."""
    import asyncio

    import asyncpg

    from tests.servers import POSTGRES_URL

    async def drop() -> None:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await connection.close()

    asyncio.run(drop())
