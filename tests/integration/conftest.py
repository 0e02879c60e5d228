"""Integration fixtures: the shop app started once, and one worker at a time."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery import signals
from celery.contrib.testing.worker import start_worker
from kombu import Connection, Queue

from tests.apps import clock, shop
from tests.integration.clock_env import Clock
from tests.integration.workers import WorkerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import LoopThread


def _delete_queues(names: list[str]) -> None:
    with Connection(shop.BROKER_URL) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except Exception:
                channel = conn.channel()


@pytest.fixture(scope="session")
def shop_app(servers: None, loop_thread: LoopThread) -> Iterator[Any]:
    """The test app, started once on the session loop (the producer side)."""
    with Connection(shop.BROKER_URL) as conn:
        Queue(shop.DEAD_LETTER_QUEUE, queue_arguments={"x-expires": shop.EXPIRES_MS})(
            conn.channel()
        ).declare()
    loop_thread.run(shop.app.startup())
    yield shop
    loop_thread.run(shop.app.shutdown())
    _delete_queues([shop.QUEUE, shop.DEAD_LETTER_SOURCE, shop.DEAD_LETTER_QUEUE])


@dataclass
class Worker:
    kind: str
    node: str
    pid: int
    process: WorkerProcess | None


WORKER_KINDS = ["inprocess", "prefork", "threads", "asyncio"]
#: How a test worker of each subprocess kind picks its pool: "asyncio" is the
#: project's pool, named the way Celery takes an out-of-tree pool.
POOL_ENV = {"asyncio": {"CELERY_CUSTOM_WORKER_POOL": "jobify_celery.pool:AsyncioPool"}}


@pytest.fixture(scope="session", params=WORKER_KINDS)
def worker(
    request: pytest.FixtureRequest, shop_app: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A worker consuming the session's queues: in-process, prefork or threads."""
    kind: str = request.param
    queues = [shop.QUEUE, shop.DEAD_LETTER_SOURCE]
    node = f"{shop.QUEUE}-{kind}@test"
    if kind == "inprocess":
        with start_worker(
            shop.celery_app,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            hostname=node,
            queues=queues,
            shutdown_timeout=30,
        ):
            yield Worker(kind, node, os.getpid(), None)
        return
    log_path = Path(tmp_path_factory.mktemp(f"worker-{kind}")) / "worker.log"
    process = WorkerProcess(
        app_path="tests.apps.shop:celery_app",
        celery_app=shop.celery_app,
        queues=queues,
        node=node,
        pool="custom" if kind in POOL_ENV else kind,
        concurrency=2 if kind != "asyncio" else 50,
        log_path=log_path,
        extra_env=POOL_ENV.get(kind),
    )
    process.wait_ready()
    yield Worker(kind, node, process.pid, process)
    process.stop()


@pytest.fixture
def published() -> Iterator[list[tuple[str, str]]]:
    """(task id, task name) of each Celery message this process publishes."""
    ids: list[tuple[str, str]] = []

    def on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers:
            ids.append((str(headers.get("id")), str(headers.get("task"))))

    signals.before_task_publish.connect(on_publish, weak=False)
    yield ids
    signals.before_task_publish.disconnect(on_publish)


@pytest.fixture
def clock_env(servers: None, tmp_path: Path) -> Iterator[Clock]:
    """A beat test's processes (stopped at the end), on an SQLite file of its own."""
    with Connection(clock.BROKER_URL) as conn, contextlib.suppress(Exception):
        conn.channel().queue_purge(clock.QUEUE)
    env = Clock(tmp_path)
    yield env
    for process in reversed(env.processes):
        process.stop()
