"""Fault-injection fixtures: a TCP proxy before RabbitMQ, and a private Redis.

The shared servers are never stopped or flushed: every fault happens in the
proxy or in the private ``redis-server``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Self

import pytest
from kombu import Connection

from tests.faults.proxy import TcpProxy
from tests.faults.redis_server import PrivateRedis
from tests.servers import BROKER_URL

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def broker_proxy(servers: None) -> Iterator[TcpProxy]:
    """A proxy in front of the shared RabbitMQ."""
    proxy = TcpProxy(Connection(BROKER_URL).port or 5672)
    yield proxy
    proxy.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.close()


def proxied_broker_url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}//"


class StallMeter:
    """Measures how late the event loop runs a 1 ms timer, for as long as it runs."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._measure())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.001)
            self.longest = max(self.longest, loop.time() - started - 0.001)
