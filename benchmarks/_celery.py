"""The Celery app settings both sides of the benchmarks share (no Jobify here)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue


def bench_celery_app(name: str, queue: str, **settings: Any) -> Celery:
    """A Celery app on the benchmark broker and backend, consuming ``queue``.

    The queue has no ``x-expires``: kombu re-declares such queues on every
    publish, which would hide the publish costs being measured. Each
    benchmark deletes its queues itself.
    """
    app = Celery(
        name,
        broker=os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        backend=os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
    )
    app.conf.update(
        {
            "task_default_queue": queue,
            "task_queues": [Queue(queue)],
            "broker_connection_retry_on_startup": True,
            "worker_prefetch_multiplier": 4,
            "result_expires": 600,
            **settings,
        }
    )
    return app
