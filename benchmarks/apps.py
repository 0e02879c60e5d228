"""The apps the benchmarks run: one Celery app, plain tasks beside Jobify routes."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import signals
from jobify import INJECT, JobContext, Jobify
from jobify.storage import SQLiteStorage

from benchmarks._celery import bench_celery_app
from jobify_celery import JobifyCelery

QUEUE = os.environ.get("BENCH_QUEUE", "jobify-celery-bench")
celery_app = bench_celery_app("bench", QUEUE)
BEAT_DB = os.environ.get("BENCH_BEAT_DB", "")


class PassThrough:
    """The one outer middleware of the publish benchmark: does nothing."""

    async def __call__(self, call_next: Any, context: Any) -> Any:
        return await call_next(context)


app = Jobify(storage=SQLiteStorage(BEAT_DB) if BEAT_DB else False, outer_middleware=[PassThrough()])
JobifyCelery(app, celery_app, track_started=os.environ.get("BENCH_TRACK_STARTED", "0") == "1")

# beat_precision: which beat this process is (each starts its own).
PUBLISH_LOG = os.environ.get("BENCH_PUBLISH_LOG", "")
#: Only this task's publishes are logged, if set (cron_scale's burst is not).
LOG_TASK = os.environ.get("BENCH_PUBLISH_LOG_TASK", "")
if os.environ.get("BENCH_PLAIN_BEAT"):
    celery_app.conf.beat_schedule = {
        "plain-every-second": {"task": "bench.beat_noop", "schedule": timedelta(seconds=1)}
    }


@celery_app.task(name="bench.beat_noop")
def beat_noop() -> None:
    """Plain Celery beat's entry in ``beat_precision``."""


@app.task(
    name="bench.jobify_tick",
    **({"cron": "* * * * * * *"} if os.environ.get("BENCH_JOBIFY_CRON") else {}),
)
async def jobify_tick() -> None:
    return None


@signals.before_task_publish.connect
def _log_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Record when beat publishes (only in beat_precision's beat processes)."""
    if not PUBLISH_LOG or not headers:
        return
    if LOG_TASK and headers.get("task") != LOG_TASK:
        return
    published = time.time()
    raw = headers.get("jobify") or "{}"
    jobify = json.loads(raw) if isinstance(raw, str) else raw
    row = {"task": headers.get("task"), "published": published, "planned": jobify.get("exec_at")}
    client = redis.Redis.from_url(celery_app.conf.result_backend)
    try:
        client.rpush(PUBLISH_LOG, json.dumps(row))
        client.expire(PUBLISH_LOG, 3600)
    finally:
        client.close()


@app.task(
    name="bench.jobify_noop",
    metadata={"celery": {"acks_late": os.environ.get("BENCH_ACKS_LATE", "1") == "1"}},
)
async def jobify_noop() -> None:
    return None


# cron_scale: the crons due at one second go to a queue of their own, counted there.
BURST_QUEUE = os.environ.get("BENCH_BURST_QUEUE", "")
if BURST_QUEUE:
    celery_app.conf.task_routes = {"bench.cron_burst": {"queue": BURST_QUEUE}}


@app.task(name="bench.cron_burst")
async def cron_burst() -> None:
    return None


@app.task(name="bench.jobify_add")
async def jobify_add(a: int, b: int) -> int:
    return a + b


@celery_app.task(name="bench.plain_lateness")
def plain_lateness(planned: float) -> float:
    """Seconds between the planned start (epoch) and now."""
    return time.time() - planned


@app.task(name="bench.jobify_lateness")
async def jobify_lateness(ctx: JobContext = INJECT) -> float:
    return (datetime.now(UTC) - ctx.job.exec_at).total_seconds()
