"""Fault-injection fixtures: a TCP proxy before RabbitMQ, a private Redis, workers on them.

The shared servers are never stopped or flushed: every fault happens in the
proxy or in the private ``redis-server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any, Self

import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from tests.apps import tally as tally_module
from tests.faults.proxy import TcpProxy
from tests.faults.redis_server import PrivateRedis
from tests.integration.workers import WorkerProcess
from tests.servers import BROKER_URL, RESULT_BACKEND

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.apps.tally import Tally


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


def wait_until(check: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            msg = f"{what}: not reached in {timeout:.0f} s"
            raise AssertionError(msg)
        time.sleep(0.05)


def proxied_broker_url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}//"


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


@pytest.fixture
def make_tally(servers: None) -> Iterator[Callable[..., Tally]]:
    """Build tally apps of the test's own (a fresh queue each), deleted afterwards."""
    queues: list[str] = []

    def make(
        *,
        broker_url: str = BROKER_URL,
        result_backend: str = RESULT_BACKEND,
        **options: Any,
    ) -> Tally:
        queue = f"{tally_module.BASE_QUEUE}.faults-{uuid.uuid4().hex[:8]}"
        queues.append(queue)
        return tally_module.build(
            broker_url=broker_url, result_backend=result_backend, queue=queue, **options
        )

    yield make
    for queue in queues:
        delete_queue(queue)


@pytest.fixture
def start_tally_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `celery worker` processes for a tally app; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(
        tally: Tally,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        **options: Any,
    ) -> WorkerProcess:
        index = len(started)
        if pool == "asyncio":
            options["pool"] = "asyncio"  # the app picks its pool: JobifyCelery(pool=...)
        process = WorkerProcess(
            app_path="tests.apps.tally:celery_app",
            celery_app=tally.celery_app,
            queues=[tally.queue],
            node=f"{tally.queue}-{pool}{index}-{uuid.uuid4().hex[:6]}@test",
            pool=pool,
            concurrency=concurrency,
            log_path=tmp_path / f"worker{index}.log",
            extra_env=tally_module.worker_env(tally, **options),
        )
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


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
