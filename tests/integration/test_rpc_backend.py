"""With the rpc:// result backend a push is published, and awaiting it says why it cannot be."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from celery import Celery
from jobify import Jobify
from kombu import Connection, Queue

from jobify_celery import JobifyCelery, NoResultBackendError
from tests.servers import BROKER_URL

pytestmark = pytest.mark.integration


def test_a_push_is_published_and_its_wait_refused_with_the_reason(servers: None) -> None:
    queue = f"jobify-celery-test-rpc-{uuid.uuid4().hex[:8]}"
    celery_app = Celery("rpc", broker=BROKER_URL, backend="rpc://", set_as_current=False)
    celery_app.conf.update(
        task_default_queue=queue,
        task_queues=[Queue(queue, queue_arguments={"x-expires": 60_000})],
    )
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)

    @app.task(name="rpc.answer")
    async def answer() -> int:
        return 42

    async def scenario() -> str:
        async with app:
            job = await answer.push()
            with pytest.raises(NoResultBackendError, match="rpc://"):
                await job
            return str(job.id)

    try:
        job_id = asyncio.run(scenario())
        with Connection(BROKER_URL) as conn:
            message = conn.default_channel.basic_get(queue, no_ack=True)
        assert message is not None
        assert message.headers["id"] == job_id
    finally:
        with Connection(BROKER_URL) as conn:
            conn.default_channel.queue_delete(queue)
