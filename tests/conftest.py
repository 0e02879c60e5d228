"""Shared fixtures: real servers, one test queue per session, a producer loop."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

# Every process of this session (pytest and the workers it starts) uses one
# queue of its own, so parallel runs on the shared broker never meet.
# Set before the test apps are imported: they name their queues from it.
os.environ.setdefault("JOBIFY_CELERY_TEST_QUEUE", f"jobify-celery-test-{uuid.uuid4().hex[:12]}")
# The SQLite file the beat tests' producer shares with the beats they start.
os.environ.setdefault(
    "CLOCK_DB", str(Path(tempfile.gettempdir()) / f"{os.environ['JOBIFY_CELERY_TEST_QUEUE']}.db")
)

from tests.apps import tally as tally_module
from tests.helpers import delete_queue
from tests.integration.workers import WorkerProcess
from tests.servers import (
    BROKER_URL,
    RESULT_BACKEND,
    require_rabbitmq,
    require_redis,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from tests.apps.tally import Tally


T = TypeVar("T")


class LoopThread:
    """An event loop in a background thread that tests hand coroutines to.

    Jobify 0.14 cannot start an app with routers twice in one process, so the
    session starts each app once on this loop and tests run their async code
    here with ``run(coro)``.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def servers() -> None:
    """Fail (never skip) when RabbitMQ or Redis does not answer."""
    require_rabbitmq(BROKER_URL)
    require_redis(RESULT_BACKEND)


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
        extra_args: list[str] | None = None,
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
            extra_args=extra_args,
        )
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()
