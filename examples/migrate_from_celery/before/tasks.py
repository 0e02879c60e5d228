"""A plain Celery project, before the move to Jobify middleware.

celery -A examples.migrate_from_celery.before.tasks:celery_app worker
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, shared_task
from kombu import Queue

QUEUE = os.environ.get("BILLING_QUEUE", "billing")

celery_app = Celery(
    "billing",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
celery_app.conf.update(
    task_queues=[Queue(QUEUE)],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@celery_app.task(bind=True, name="billing.send_invoice", max_retries=3, default_retry_delay=1)
def send_invoice(self: Any, order_id: int, email: str) -> dict[str, Any]:
    return {"order_id": order_id, "email": email, "task_id": self.request.id}


@shared_task(name="billing.total")
def total(amounts: list[float]) -> float:
    return round(sum(amounts), 2)
