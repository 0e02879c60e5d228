"""The Jobify app the integration tests run, in-process and in `celery worker`.

Everything a test needs to observe in a worker process comes back either in a
task's result (through the real result backend) or through a Redis list the
worker writes (`record`), never through logs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import redis
from celery import Celery, signals
from jobify import INJECT, Job, JobContext, Jobify, JobRouter, RunMode, SmartRetry, State
from kombu import Queue

from jobify_celery import JobifyCelery
from tests.servers import BROKER_URL, RESULT_BACKEND

QUEUE = os.environ.get("JOBIFY_CELERY_TEST_QUEUE", "jobify-celery-test-local")
DEAD_LETTER_SOURCE = f"{QUEUE}.dl-source"
DEAD_LETTER_QUEUE = f"{QUEUE}.dead"
LIFECYCLE_QUEUE = f"{QUEUE}.lifecycle"
EXPIRES_MS = 120_000

celery_app = Celery("shop", broker=BROKER_URL, backend=RESULT_BACKEND)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[
        Queue(QUEUE, queue_arguments={"x-expires": EXPIRES_MS}),
        Queue(LIFECYCLE_QUEUE, queue_arguments={"x-expires": EXPIRES_MS}),
        Queue(
            DEAD_LETTER_SOURCE,
            queue_arguments={
                "x-expires": EXPIRES_MS,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
            },
        ),
    ],
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


def record(key: str, value: str) -> None:
    """Append to this test session's Redis list ``key`` (the side channel)."""
    client = redis.Redis.from_url(RESULT_BACKEND)
    try:
        name = f"{QUEUE}:{key}"
        client.rpush(name, value)
        client.expire(name, 600)
    finally:
        client.close()


def recorded(key: str) -> list[str]:
    client = redis.Redis.from_url(RESULT_BACKEND)
    try:
        return [v.decode() for v in client.lrange(f"{QUEUE}:{key}", 0, -1)]
    finally:
        client.close()


@asynccontextmanager
async def lifespan(_app: Jobify) -> AsyncIterator[dict[str, Any]]:
    record("lifespan", f"enter:{os.getpid()}")
    yield {"lifespan_pid": os.getpid(), "greeting": "hello"}
    record("lifespan", f"exit:{os.getpid()}")


class Wrap:
    """Inner middleware: notes its turn, and wraps results of `wrap` routes."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def __call__(self, call_next: Any, ctx: JobContext) -> Any:
        ctx.request_state.setdefault("inner", []).append(self.tag)
        result = await call_next(ctx)
        if ctx.route_options.get("metadata", {}).get("wrap"):
            return f"{self.tag}({result})"
        return result


class OuterTag:
    """Outer middleware: leaves a trace the worker can see; may stop a push."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def __call__(self, call_next: Any, ctx: Any) -> Any:
        if ctx.arguments.get("stop_here") is True:
            return None
        trace = ctx.request_state.setdefault("outer", [])
        trace.append(self.tag)
        ctx.request_state["outer_context"] = {
            "trigger": type(ctx.trigger).__name__,
            "job_id": ctx.job.id,
            "arguments": sorted(ctx.arguments),
            "func": ctx.func_spec.name,
            "route": ctx.schedule_builder.name,
            "flags": [ctx.is_force, ctx.is_replace],
            "has_app": ctx.app is not None and ctx.jobify_config is not None,
        }
        return await call_next(ctx)


def handle_key_error(exc: Exception, _ctx: JobContext) -> str:
    return f"handled:{exc.args[0]}"


app = Jobify(
    middleware=[Wrap("A"), Wrap("B")],
    outer_middleware=[OuterTag("root")],
    lifespan=lifespan,
    storage=False,
)
JobifyCelery(app, celery_app)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Line:
    sku: str
    qty: int


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: datetime
    due: date
    total: Decimal
    color: Color
    lines: list[Line]


@app.task(metadata={"wrap": True})
async def onion(ctx: JobContext = INJECT) -> str:
    return ">".join(ctx.request_state["inner"]) + ">f"


@app.task
async def describe(
    x: int,
    label: str = "none",
    *,
    stop_here: bool = False,
    ctx: JobContext = INJECT,
    job: Job[Any] = INJECT,
    state: State = INJECT,
) -> dict[str, Any]:
    request = ctx.request_state["celery_request"]
    return {
        "x": x,
        "x_type": type(x).__name__,
        "label": label,
        "stop_here": stop_here,
        "job_id": ctx.job.id,
        "injected_job_is_ctx_job": job is ctx.job,
        "injected_state_is_ctx_state": state is ctx.state,
        "status": str(ctx.job.status),
        "exec_at": ctx.job.exec_at.isoformat(),
        "celery_request_id": request.id,
        "celery_task_name": ctx.request_state["celery_task"].name,
        "request_state_keys": sorted(ctx.request_state),
        "outer": ctx.request_state.get("outer"),
        "outer_context": ctx.request_state.get("outer_context"),
        "inner": ctx.request_state.get("inner"),
        "lifespan_greeting": ctx.state.greeting,
        "route_metadata": dict(ctx.route_options.get("metadata", {})),
        "runnable_name": ctx.runnable.name,
        "builder_name": ctx.schedule_builder.name,
        "config_tz": str(ctx.jobify_config.tz),
        "app_is_app": ctx.app is app,
        "pid": os.getpid(),
    }


@app.task
async def echo_order(order: Order) -> Order:
    return order


@app.task
async def echo_types(
    when: datetime,
    day: date,
    ident: uuid.UUID,
    amount: Decimal,
    color: Color,
    *rest: int,
    **extra: str,
) -> dict[str, Any]:
    return {
        "types": [type(v).__name__ for v in (when, day, ident, amount, color)],
        "rest": list(rest),
        "extra": extra,
    }


@app.task
async def fail(message: str) -> None:
    raise LookupError(message)


@app.task(exception_handlers={KeyError: handle_key_error})
async def handled(key: str) -> str:
    raise KeyError(key)


@app.task(timeout=0.3)
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@app.task
def sync_default() -> str:
    return threading.current_thread().name


@app.task(run_mode=RunMode.MAIN)
def sync_main(ctx: JobContext = INJECT) -> bool:
    return asyncio.get_running_loop() is not None and ctx is not None


@app.task(run_mode=RunMode.MAIN)
def sync_main_thread() -> str:
    return threading.current_thread().name


@app.task
async def loop_thread_name() -> str:
    return threading.current_thread().name


@app.task
async def process_info(state: State = INJECT) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "loop": id(asyncio.get_running_loop()),
        "lifespan_pid": state.lifespan_pid,
    }


@app.task
async def countdown(key: str, ctx: JobContext = INJECT) -> int:
    """Each run takes one from a Redis counter and pushes itself again via the builder."""
    client = redis.Redis.from_url(RESULT_BACKEND)
    try:
        left = int(client.decr(f"{QUEUE}:{key}:left"))
    finally:
        client.close()
    record(key, ctx.job.id)
    if left > 0:
        await ctx.schedule_builder.push()
    return left


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def total(values: list[int]) -> int:
    return sum(values)


@app.task(cron="* * * * * * *")
async def every_second() -> None:
    record("every_second", str(os.getpid()))


# -- lifecycle: delay/at, replace, cancel, retries, timeouts, delivery -------

ON_LIFECYCLE_QUEUE = {"celery": {"queue": LIFECYCLE_QUEUE}}


@app.task
async def stamp(label: str, ctx: JobContext = INJECT) -> dict[str, Any]:
    """Say when this run started, against the time it was planned for."""
    started = datetime.now(ctx.jobify_config.tz)
    record(f"stamp:{label}", ctx.job.id)
    return {
        "started": started.isoformat(),
        "exec_at": ctx.job.exec_at.isoformat(),
        "attempt": ctx.request_state["attempt"],
    }


async def _long_run(key: str, seconds: float) -> str:
    record(key, f"start:{os.getpid()}")
    try:
        await asyncio.sleep(seconds)
        record(key, "end")
    finally:
        record(key, "finally")
    return "finished"


@app.task
async def long_async(key: str, seconds: float) -> str:
    return await _long_run(key, seconds)


@app.task(metadata=ON_LIFECYCLE_QUEUE)
async def long_async_elsewhere(key: str, seconds: float) -> str:
    return await _long_run(key, seconds)


@app.task(metadata={"celery": {"queue": LIFECYCLE_QUEUE, "soft_time_limit": 1}})
async def soft_limited_elsewhere(key: str, seconds: float) -> str:
    """Runs past Celery's soft time limit when ``seconds`` > 1."""
    record(key, f"pid:{os.getpid()}")
    return await _long_run(key, seconds)


@app.task(run_mode=RunMode.MAIN, metadata=ON_LIFECYCLE_QUEUE)
def long_sync_elsewhere(key: str, seconds: float) -> str:
    record(key, f"start:{os.getpid()}")
    time.sleep(seconds)
    record(key, "end")
    return "finished"


@app.task(run_mode=RunMode.MAIN, timeout=1.0, metadata=ON_LIFECYCLE_QUEUE)
def stuck_sync_elsewhere(key: str) -> str:
    record(key, f"start:{os.getpid()}")
    time.sleep(60)
    return "never"


class Flaky(RuntimeError):
    pass


def _flaky(key: str, fail_times: int, ctx: JobContext) -> str:
    attempt = ctx.request_state["attempt"]
    record(key, f"{attempt}:{time.time()}:{os.getpid()}")
    if attempt <= fail_times:
        msg = f"attempt {attempt} failed"
        raise Flaky(msg)
    return f"ok after {attempt}"


@app.task(retry=SmartRetry(retries=3, initial_delay=0.3, backoff_factor=2.0, jitter=False))
async def flaky(key: str, fail_times: int, ctx: JobContext = INJECT) -> str:
    return _flaky(key, fail_times, ctx)


@app.task(retry=SmartRetry(retries=3, initial_delay=0.2, exclude_exceptions=(Flaky,)))
async def flaky_excluded(key: str, fail_times: int, ctx: JobContext = INJECT) -> str:
    return _flaky(key, fail_times, ctx)


@app.task(retry=SmartRetry(retries=2, initial_delay=3.0, jitter=False), metadata=ON_LIFECYCLE_QUEUE)
async def flaky_elsewhere(key: str, fail_times: int, ctx: JobContext = INJECT) -> str:
    return _flaky(key, fail_times, ctx)


billing = JobRouter(prefix="billing", outer_middleware=[OuterTag("router")], middleware=[Wrap("R")])
refunds = JobRouter(prefix="refunds")


@billing.task(metadata={"wrap": True})
async def invoice(n: int, ctx: JobContext = INJECT) -> str:
    return f"invoice{n}:" + ",".join(ctx.request_state.get("outer", []))


@refunds.task
async def refund(amount: Decimal) -> Decimal:
    return -amount


billing.include_router(refunds)
app.include_router(billing)


@signals.task_prerun.connect
def _note_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if getattr(task, "jobify_route", None):
        record(f"signals:{task_id}", "prerun")


@signals.task_postrun.connect
def _note_postrun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if getattr(task, "jobify_route", None):
        record(f"signals:{task_id}", "postrun")
