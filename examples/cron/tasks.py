"""Crons on Celery beat: one declared in code, one added at run time.

    celery -A examples.cron.tasks:celery_app worker -l info
    celery -A examples.cron.tasks:celery_app beat -l info
    python -m examples.cron.add_report      # adds a cron while both run

Beat and every producer share the Jobify storage where schedules live: here
an SQLite file (one host). For several hosts use a Jobify ``Storage`` on a
shared database (PostgreSQL).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from celery import Celery
from jobify import INJECT, Cron, JobContext, Jobify, MisfirePolicy
from jobify.storage import SQLiteStorage
from kombu import Queue

from jobify_celery import JobifyCelery

logger = logging.getLogger("cron-example")

QUEUE = os.environ.get("CRON_QUEUE", "cron-example")
celery_app = Celery(
    "cron_example",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE)],
    broker_connection_retry_on_startup=True,
)

# Beat and the producers of one host share this file; kept out of the working directory.
CRON_DB = os.environ.get("CRON_DB", str(Path(tempfile.gettempdir()) / "jobify-cron-example.db"))
app = Jobify(storage=SQLiteStorage(CRON_DB))
JobifyCelery(app, celery_app)  # also makes `celery beat` use JobifyScheduler


# Jobify's parser: 7 fields = second minute hour day month weekday year.
@app.task(cron=Cron("*/10 * * * * * *", misfire_policy=MisfirePolicy.ONCE))
async def heartbeat(ctx: JobContext = INJECT) -> str:
    run = ctx.request_state["cron_run"]
    logger.info("heartbeat run %s planned for %s", run, ctx.job.exec_at.isoformat())
    return f"run {run}"


@app.task
async def report(kind: str, ctx: JobContext = INJECT) -> str:
    logger.info("%s report (cron %s) at %s", kind, ctx.job.id, ctx.job.exec_at.isoformat())
    return kind
