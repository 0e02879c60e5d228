"""Pushes to a queue declared with ``x-expires``: declared again only as its lease needs.

kombu declares such a queue (exchange, queue, binding: three round trips)
before every publish, which made pushes to it several times slower. The
bridge's publisher declares it again once half its expiry has passed since
the last declaration, which renews the queue's lease before it can run out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery
from jobify import Jobify
from kombu import Connection, Queue

from jobify_celery import JobifyCelery, _amqp_sender
from tests.servers import BROKER_URL, RESULT_BACKEND

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

EXPIRES_MS = 1500
PUSHES = 10
EVERY = 0.5


@pytest.fixture
def queue_name(servers: None) -> Iterator[str]:
    name = f"jobify-celery-test-expiring-{uuid.uuid4().hex[:8]}"
    yield name
    with Connection(BROKER_URL) as conn:
        conn.default_channel.queue_delete(name)


def test_an_expiring_queue_is_declared_by_lease_and_never_expires_meanwhile(
    queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    celery_app = Celery(f"expiring-{queue_name}", broker=BROKER_URL, backend=RESULT_BACKEND)
    celery_app.conf.update(
        task_default_queue=queue_name,
        task_queues=[Queue(queue_name, queue_arguments={"x-expires": EXPIRES_MS})],
    )
    app = Jobify(storage=False)
    JobifyCelery(app, celery_app)

    @app.task(name=f"{queue_name}.noop")
    async def noop() -> None:
        return None

    declared: list[str] = []
    replay = _amqp_sender._replay_declare

    async def counting(channel: Any, call: str, kwargs: dict[str, Any]) -> None:
        if call == "queue_declare":
            declared.append(call)
        await replay(channel, call, kwargs)

    monkeypatch.setattr(_amqp_sender, "_replay_declare", counting)

    async def main() -> None:
        async with app:
            started = time.monotonic()
            for index in range(PUSHES):
                await asyncio.sleep(max(0.0, started + index * EVERY - time.monotonic()))
                await noop.push()

    asyncio.run(main())
    # No consumer: the queue lives on its declarations alone, 1.5 s each.
    time.sleep(EVERY)
    with Connection(BROKER_URL) as conn:
        _, depth, _ = conn.default_channel.queue_declare(queue_name, passive=True)
    assert depth == PUSHES
    # 4.5 s of pushes, a declaration holding 0.75 s: about six, not ten.
    assert 4 <= len(declared) <= 7, declared
