"""A Jobify app for the beat tests: crons chosen by environment, SQLite storage.

``CLOCK_CRONS`` (comma-separated names below) picks which declared crons this
process sees (it matters to beat only), ``CLOCK_DB`` the SQLite file shared by
beat and the producer (or a PostgreSQL URL, with the table in ``CLOCK_TABLE``),
``CLOCK_FACTORY=croniter`` switches the cron parser.
Every run appends JSON to the Redis list ``<queue>:clock:<route>``.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from celery import Celery
from jobify import INJECT, Cron, JobContext, Jobify, MisfirePolicy
from jobify.storage import SQLiteStorage
from kombu import Queue

from jobify_celery import JobifyCelery
from jobify_celery.cron import croniter_factory
from tests.apps.shop import record, recorded
from tests.servers import BROKER_URL, RESULT_BACKEND

BASE_QUEUE = os.environ.get("JOBIFY_CELERY_TEST_QUEUE", "jobify-celery-test-local")
QUEUE = f"{BASE_QUEUE}.clock"
CRONS = {name for name in os.environ.get("CLOCK_CRONS", "").split(",") if name}
RUN = os.environ.get("CLOCK_RUN", "none")
EVERY_SECOND = "* * * * * * *"
TICK_EXPRESSION = os.environ.get("CLOCK_TICK_EXPR", EVERY_SECOND)

# Named after the session: beat's lock and cron feed are per Celery app name.
celery_app = Celery(f"clock-{BASE_QUEUE}", broker=BROKER_URL, backend=RESULT_BACKEND)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, queue_arguments={"x-expires": 120_000})],
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


def _storage() -> Any:
    """SQLite at ``CLOCK_DB``; PostgreSQL when it is a URL (table ``CLOCK_TABLE``)."""
    where = os.environ.get("CLOCK_DB", "clock.db")
    if where.startswith("postgresql://"):
        from jobify_db.postgresql.asyncpg import AsyncpgStorage

        return AsyncpgStorage(where, table_name=os.environ.get("CLOCK_TABLE", "jobify_schedules"))
    return SQLiteStorage(where)


factory = croniter_factory if os.environ.get("CLOCK_FACTORY") == "croniter" else None
app = Jobify(storage=_storage(), **({"cron_factory": factory} if factory else {}))
JobifyCelery(app, celery_app)


def cron_if(name: str, cron: str | Cron) -> dict[str, Any]:
    return {"cron": cron} if name in CRONS else {}


def note(route: str, ctx: JobContext, **extra: Any) -> None:
    request = ctx.request_state["celery_request"]
    record(
        f"clock:{RUN}:{route}",
        json.dumps(
            {
                "job_id": ctx.job.id,
                "exec_at": ctx.job.exec_at.isoformat(),
                "run": ctx.request_state.get("cron_run"),
                "task_id": request.id,
                "is_cron": ctx.job.is_cron(),
                **extra,
            }
        ),
    )


def runs(run: str, route: str) -> list[dict[str, Any]]:
    return [json.loads(row) for row in recorded(f"clock:{run}:{route}")]


@app.task(**cron_if("tick", TICK_EXPRESSION))
async def tick(ctx: JobContext = INJECT) -> None:
    note("tick", ctx)


@app.task(**cron_if("misfire", Cron(EVERY_SECOND, misfire_policy=MisfirePolicy.ALL)))
async def misfire_all(ctx: JobContext = INJECT) -> None:
    note("misfire_all", ctx)


@app.task(**cron_if("misfire", Cron(EVERY_SECOND, misfire_policy=MisfirePolicy.SKIP)))
async def misfire_skip(ctx: JobContext = INJECT) -> None:
    note("misfire_skip", ctx)


@app.task(**cron_if("misfire", Cron(EVERY_SECOND, misfire_policy=MisfirePolicy.ONCE)))
async def misfire_once(ctx: JobContext = INJECT) -> None:
    note("misfire_once", ctx)


@app.task(
    **cron_if(
        "misfire",
        Cron(EVERY_SECOND, misfire_policy=MisfirePolicy.GRACE(timedelta(seconds=2))),
    )
)
async def misfire_grace(ctx: JobContext = INJECT) -> None:
    note("misfire_grace", ctx)


@app.task(**cron_if("limited", Cron(EVERY_SECOND, max_runs=3, args=("limited",))))
async def limited(label: str, ctx: JobContext = INJECT) -> None:
    note("limited", ctx, label=label)


@app.task(**cron_if("failing", Cron(EVERY_SECOND, max_failures=2)))
async def failing(ctx: JobContext = INJECT) -> None:
    note("failing", ctx)
    msg = "always fails"
    raise RuntimeError(msg)


@app.task(**cron_if("croniter", "* * * * * */2"))
async def every_two(ctx: JobContext = INJECT) -> None:
    note("every_two", ctx)


@app.task
async def labelled(label: str, ctx: JobContext = INJECT) -> None:
    note("labelled", ctx, label=label)
