"""Checks that the real servers answer; a missing one fails with its name."""

from __future__ import annotations

import os

import pytest
import redis
from kombu import Connection

BROKER_URL = os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
RESULT_BACKEND = os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0")


def require_rabbitmq(url: str) -> None:
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(
            f"RabbitMQ is not answering at {url} ({exc}). Start it "
            "(rabbitmq-server -detached) or run `bash .ci/run`, which does.",
            pytrace=False,
        )


def require_redis(url: str) -> None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        pytest.fail(
            f"Redis is not answering at {url} ({exc}). Start it "
            "(redis-server --daemonize yes) or run `bash .ci/run`, which does.",
            pytrace=False,
        )


POSTGRES_URL = os.environ.get(
    "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/jobify_celery_test"
)


def require_postgres(url: str) -> None:
    import asyncio

    import asyncpg

    async def ping() -> None:
        connection = await asyncpg.connect(url, timeout=5)
        await connection.close()

    try:
        asyncio.run(ping())
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not answering at {url} ({type(exc).__name__}: {exc}). Start it "
            "and create the database, or run `bash scripts/test.sh`, which does both.",
            pytrace=False,
        )
