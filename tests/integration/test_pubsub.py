"""The watcher's own pub/sub connection against the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from jobify_celery._redis_pubsub import PubSubConnection
from tests.servers import RESULT_BACKEND

pytestmark = pytest.mark.integration


async def _open(received: list[tuple[bytes, bytes]]) -> PubSubConnection:
    url = aioredis.Redis.from_url(RESULT_BACKEND).connection_pool.connection_kwargs
    return await PubSubConnection.open(
        url.get("host", "127.0.0.1"),
        int(url.get("port", 6379)),
        on_message=lambda channel, data: received.append((channel, data)),
        keep_alive_channel=f"test-keep-alive-{uuid.uuid4().hex}".encode(),
    )


def test_messages_arrive_once_subscribed_and_stop_once_unsubscribed(servers: None) -> None:
    channel = f"test-pubsub-{uuid.uuid4().hex}".encode()

    async def scenario() -> list[tuple[bytes, bytes]]:
        received: list[tuple[bytes, bytes]] = []
        connection = await _open(received)
        client = aioredis.Redis.from_url(RESULT_BACKEND)
        try:
            await connection.subscribe(channel)  # confirmed: nothing published now is missed
            assert await client.publish(channel, b"one") == 1
            connection.ping()
            for _ in range(100):
                if received and connection.answered:
                    break
                await asyncio.sleep(0.01)
            connection.unsubscribe(channel)
            await asyncio.sleep(0.1)
            assert await client.publish(channel, b"two") == 0
        finally:
            connection.close()
            await client.aclose()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(connection.closed, 5)
        return received

    assert asyncio.run(scenario()) == [(channel, b"one")]


def test_a_refused_connection_says_so(servers: None) -> None:
    async def scenario() -> None:
        with pytest.raises(ConnectionError, match="refused"):
            await PubSubConnection.open(
                "127.0.0.1",
                6379,
                on_message=lambda *_: None,
                password="not-the-password",  # noqa: S106 - a wrong one on purpose
                keep_alive_channel=b"test-keep-alive",
            )

    asyncio.run(scenario())
