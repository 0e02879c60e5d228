"""The same project after the move: same task names, now Jobify routes.

Each Celery task keeps its decorator and gains ``@app.task`` on top: its name,
queue and options stay, old producers and queued messages keep working, and
every run now goes through the Jobify app's inner middleware.

    celery -A examples.migrate_from_celery.after.tasks:celery_app worker
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, shared_task
from jobify import JobContext, Jobify
from jobify.middleware import CallNext
from kombu import Queue

from jobify_celery import JobifyCelery

logger = logging.getLogger("billing")

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


class AuditRuns:
    """The first piece of Jobify middleware the team adds: one log line per run."""

    async def __call__(self, call_next: CallNext, context: JobContext) -> Any:
        logger.info(
            "audit: %s started (attempt %s)", context.job.id, context.request_state["attempt"]
        )
        return await call_next(context)


app = Jobify(middleware=[AuditRuns()], storage=False)
JobifyCelery(app, celery_app)  # before any task is declared or the app finalized


@app.task
@celery_app.task(bind=True, name="billing.send_invoice", max_retries=3, default_retry_delay=1)
def send_invoice(self: Any, order_id: int, email: str) -> dict[str, Any]:
    return {"order_id": order_id, "email": email, "task_id": self.request.id}


@app.task
@shared_task(name="billing.total")
def total(amounts: list[float]) -> float:
    return round(sum(amounts), 2)
