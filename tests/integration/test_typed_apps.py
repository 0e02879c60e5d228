"""Apps with a loader of their own (PydanticConverter), and with no result backend."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery
from jobify import Jobify
from kombu import Connection, Queue

from jobify_celery import ArgumentLoadError, JobifyCelery, NoResultBackendError
from tests.apps import typed
from tests.integration.workers import WorkerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import LoopThread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def typed_worker(
    servers: None, loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        app_path="tests.apps.typed:celery_app",
        celery_app=typed.celery_app,
        queues=[typed.QUEUE],
        node=f"{typed.QUEUE}@test",
        pool="threads",
        concurrency=2,
        log_path=Path(tmp_path_factory.mktemp("typed")) / "worker.log",
    )
    process.wait_ready()
    loop_thread.run(typed.app.startup())
    yield process
    loop_thread.run(typed.app.shutdown())
    process.stop()
    with Connection(typed.BROKER_URL) as conn:
        conn.channel().queue_delete(typed.QUEUE)


def test_pydantic_models_round_trip(typed_worker: WorkerProcess, loop_thread: LoopThread) -> None:
    cart = typed.Cart(
        owner="ann",
        items=[
            typed.Item(sku="a", price=Decimal("1.25")),
            typed.Item(sku="b", price=Decimal("2.50")),
        ],
        created=datetime(2026, 11, 28, tzinfo=UTC),
    )

    async def scenario() -> Any:
        job = await typed.quote.push(cart)
        return await asyncio.wait_for(job, 30)

    result = loop_thread.run(scenario())
    assert result == typed.Quote(owner="ann", total=Decimal("3.75"), count=2)


def test_pydantic_validation_errors_name_the_parameter(typed_worker: WorkerProcess) -> None:
    ok = typed.celery_app.send_task(
        "tests.apps.typed:quote",
        [{"owner": "bo", "items": [{"sku": "x", "price": "4"}], "created": "2026-01-01T00:00:00Z"}],
    )
    assert ok.get(timeout=30) == {"owner": "bo", "total": "4", "count": 1}
    bad = typed.celery_app.send_task("tests.apps.typed:quote", [{"owner": "bo", "items": "nope"}])
    with pytest.raises(ArgumentLoadError) as caught:
        bad.get(timeout=30)
    assert "task 'tests.apps.typed:quote' parameter 'cart'" in str(caught.value)
    assert "ValidationError" in str(caught.value)


def test_waiting_without_a_result_backend_raises(servers: None, loop_thread: LoopThread) -> None:
    queue = f"{typed.QUEUE}.nobackend-{uuid.uuid4().hex[:6]}"
    celery_app = Celery("nobackend", broker=typed.BROKER_URL)
    celery_app.conf.update(
        task_default_queue=queue,
        task_queues=[Queue(queue, queue_arguments={"x-expires": 60_000})],
    )
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)

    @app.task(name="nobackend:ping")
    async def ping() -> str:
        return "pong"

    async def scenario() -> tuple[str, str]:
        async with app:
            job = await ping.push()
            with pytest.raises(NoResultBackendError, match="no result backend") as waited:
                await job.wait()
            with pytest.raises(NoResultBackendError):
                await job
            return job.id, str(waited.value)

    job_id, message = loop_thread.run(scenario())
    assert "backend=" in message
    with Connection(typed.BROKER_URL) as conn:
        channel = conn.channel()
        published = channel.basic_get(queue, no_ack=True)
        channel.queue_delete(queue)
    assert published is not None
    assert published.headers["id"] == job_id
