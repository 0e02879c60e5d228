"""A small Jobify app for the shutdown and fault tests: no router, so it starts again and again.

``build()`` makes a fresh Celery app and Jobify app on the given broker and
result backend, so a fault test can point its own producer at a TCP proxy or a
private Redis, and start a `celery worker` on the same ones
(``-A tests.apps.tally:celery_app`` reads ``TALLY_QUEUE`` and ``TALLY_BUILD``,
the JSON of ``build()``'s keyword arguments: see ``worker_env()``).

Every run is counted in the shared Redis (never faulted), keyed by the run's
job id: ``runs(ns)`` tells how many times each job started and
``finished(ns)`` which ones got to their end, so a test counts lost and
duplicated jobs without trusting the servers it breaks.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import celery
import greenlet
import redis
from celery import Celery, signals
from jobify import INJECT, JobContext, Jobify, OuterContext, SmartRetry
from jobify.storage import SQLiteStorage
from kombu import Queue

from jobify_celery import JobifyCelery
from tests.servers import BROKER_URL, RESULT_BACKEND

BASE_QUEUE = os.environ.get("JOBIFY_CELERY_TEST_QUEUE", "jobify-celery-test-local")
SIDE_CHANNEL = RESULT_BACKEND
EXPIRES_MS = 120_000


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


def _side() -> redis.Redis:
    return redis.Redis.from_url(SIDE_CHANNEL)


@dataclass
class Tally:
    """One bound pair of apps and its routes."""

    queue: str
    celery_app: Celery
    app: Jobify
    work: Any
    fail: Any
    price: Any
    nested: Any
    #: Routes some tests use, by name.
    extra: dict[str, Any] = field(default_factory=dict)

    def _key(self, ns: str, field: str) -> str:
        return f"{self.queue}:{ns}:{field}"

    def runs(self, ns: str) -> dict[str, int]:
        """How many times each job of namespace ``ns`` started."""
        return self._read(ns, "runs")

    def finished(self, ns: str) -> dict[str, int]:
        """How many times each job of namespace ``ns`` reached its end."""
        return self._read(ns, "finished")

    def ends(self, ns: str) -> list[float]:
        """When each job of namespace ``ns`` reached its end (wall clock)."""
        client = _side()
        try:
            return [float(v) for v in client.lrange(self._key(ns, "ends"), 0, -1)]
        finally:
            client.close()

    def lifespan_exits(self, since: float) -> dict[int, float]:
        """When each process left the app, for exits at ``since`` or later."""
        client = _side()
        try:
            rows = [v.decode().split(":") for v in client.lrange(self._key("", "exits"), 0, -1)]
        finally:
            client.close()
        return {int(pid): float(at) for pid, at in rows if float(at) >= since}

    def _read(self, ns: str, field: str) -> dict[str, int]:
        client = _side()
        try:
            raw = client.hgetall(self._key(ns, field))
        finally:
            client.close()
        return {key.decode(): int(value) for key, value in raw.items()}


def build(  # noqa: C901, PLR0915 - the whole test app, in one place
    *,
    broker_url: str = BROKER_URL,
    result_backend: str = RESULT_BACKEND,
    queue: str = f"{BASE_QUEUE}.tally",
    expiring_queue: bool = True,
    storage: str | None = None,
    **options: Any,
) -> Tally:
    """Make a fresh pair of apps on ``broker_url``/``result_backend``, consuming ``queue``.

    ``expiring_queue=False`` declares the queue without ``x-expires``: kombu then
    declares it once per connection instead of before every publish (the
    caller deletes it). ``storage``, a SQLite file, gives the app a storage and
    a cron firing every second (``tally.tick``) for beat.
    """
    celery_app = Celery("tally", broker=broker_url, backend=result_backend, set_as_current=False)
    arguments = {"x-expires": EXPIRES_MS} if expiring_queue else {}
    celery_app.conf.update(
        task_default_queue=queue,
        task_queues=[Queue(queue, queue_arguments=arguments)],
        broker_connection_retry_on_startup=True,
        result_expires=600,
    )

    def count(ns: str, field: str, job_id: str) -> None:
        client = _side()
        try:
            key = f"{queue}:{ns}:{field}"
            client.hincrby(key, job_id, 1)
            client.expire(key, 900)
            if field == "finished":
                ends = f"{queue}:{ns}:ends"
                client.rpush(ends, repr(time.time()))
                client.expire(ends, 900)
        finally:
            client.close()

    @asynccontextmanager
    async def lifespan(_app: Jobify) -> AsyncIterator[None]:
        yield
        # When this process left the app (for the worker shutdown tests).
        client = _side()
        try:
            key = f"{queue}::exits"
            client.rpush(key, f"{os.getpid()}:{time.time()!r}")
            client.expire(key, 900)
        finally:
            client.close()

    class LingerAfterPublish:
        """Outer middleware: for a namespace starting with "linger", waits after publishing."""

        async def __call__(self, call_next: Any, ctx: OuterContext) -> Any:
            handle = await call_next(ctx)
            if str(ctx.arguments.get("ns", "")).startswith("linger"):
                await asyncio.sleep(1.0)
            return handle

    app = Jobify(
        storage=SQLiteStorage(storage) if storage else False,
        lifespan=lifespan,
        outer_middleware=[LingerAfterPublish()],
    )
    JobifyCelery(app, celery_app, **options)

    @signals.task_prerun.connect(weak=False)
    def note_attempt(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        # Every execution of a task of this app, even one whose arguments never load.
        if task_id and getattr(task, "app", None) is celery_app:
            count("attempts", "runs", task_id)

    def note_signal(kind: str, task: Any, task_id: str | None) -> None:
        if task_id and getattr(task, "app", None) is celery_app:
            count(f"signal:{kind}", "runs", task_id)

    @signals.task_success.connect(weak=False)
    def on_success(sender: Any = None, **_: Any) -> None:
        note_signal("success", sender, getattr(sender.request, "id", None) if sender else None)

    @signals.task_failure.connect(weak=False)
    def on_failure(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        note_signal("failure", sender, task_id)

    @signals.task_retry.connect(weak=False)
    def on_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
        note_signal("retry", sender, getattr(request, "id", None))

    @signals.task_revoked.connect(weak=False)
    def on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
        note_signal("revoked", sender, getattr(request, "id", None))

    @app.task(name="tally.tick", **({"cron": "* * * * * * *"} if storage else {}))
    async def tick(ctx: JobContext = INJECT) -> None:
        """Count each run of the cron by its run number: a run counted twice fired twice."""
        count("ticks", "runs", str(ctx.request_state["cron_run"]))

    @app.task(name="tally.work")
    async def work(ns: str, seconds: float = 0.0, ctx: JobContext = INJECT) -> str:
        """Count a start, sleep, count an end; return the job id."""
        count(ns, "runs", ctx.job.id)
        if seconds:
            await asyncio.sleep(seconds)
        count(ns, "finished", ctx.job.id)
        return ctx.job.id

    @app.task(name="tally.fail")
    async def fail(ns: str, ctx: JobContext = INJECT) -> None:
        """Count a start, then fail."""
        count(ns, "runs", ctx.job.id)
        msg = f"job {ctx.job.id} fails on purpose"
        raise RuntimeError(msg)

    @app.task(name="tally.price", retry=SmartRetry(retries=2, initial_delay=0.1, jitter=False))
    async def price(ns: str, amount: Decimal, shade: Shade, ctx: JobContext = INJECT) -> str:
        """Typed arguments on a retrying route: poison values must fail once, not three times."""
        count(ns, "runs", ctx.job.id)
        return f"{amount}:{shade.value}"

    @app.task(name="tally.nested")
    async def nested(value: list[Any]) -> int:
        """Takes any nesting (the push side is what is probed)."""
        return len(value)

    async def sleep_counted(ns: str, seconds: float, job_id: str) -> str:
        count(ns, "runs", job_id)
        try:
            await asyncio.sleep(seconds)
            count(ns, "finished", job_id)
        finally:
            count(ns, "finally", job_id)
        return job_id

    @app.task(name="tally.soft_limited", metadata={"celery": {"soft_time_limit": 1}})
    async def soft_limited(ns: str, seconds: float, ctx: JobContext = INJECT) -> str:
        """Runs past Celery's soft time limit when ``seconds`` > 1."""
        return await sleep_counted(ns, seconds, ctx.job.id)

    @app.task(name="tally.hard_limited", metadata={"celery": {"time_limit": 1}})
    async def hard_limited(ns: str, seconds: float, ctx: JobContext = INJECT) -> str:
        """Runs past Celery's (hard) time limit when ``seconds`` > 1."""
        return await sleep_counted(ns, seconds, ctx.job.id)

    @app.task(name="tally.blocker")
    async def blocker(ns: str, seconds: float, ctx: JobContext = INJECT) -> str:
        """Holds the event loop: a synchronous sleep in a coroutine."""
        count(ns, "runs", ctx.job.id)
        time.sleep(seconds)  # noqa: ASYNC251 - the very mistake the watchdog names
        return ctx.job.id

    @app.task(name="tally.flaky", retry=SmartRetry(retries=2, initial_delay=0.1, jitter=False))
    async def flaky(ns: str, fail_times: int, ctx: JobContext = INJECT) -> int:
        """Fail the first ``fail_times`` attempts; return the attempt that succeeded."""
        attempt = int(ctx.request_state["attempt"])
        count(ns, "runs", ctx.job.id)
        if attempt <= fail_times:
            msg = f"attempt {attempt} fails on purpose"
            raise RuntimeError(msg)
        return attempt

    @app.task(name="tally.rated", metadata={"celery": {"rate_limit": "10/s"}})
    async def rated(ns: str, ctx: JobContext = INJECT) -> float:
        """At most ten a second, whatever the pool."""
        count(ns, "runs", ctx.job.id)
        return time.time()

    @app.task(name="tally.collector")
    async def collector() -> list[int]:
        """The worker process's garbage collector: objects frozen, then its thresholds."""
        return [gc.get_freeze_count(), *gc.get_threshold()]

    @app.task(name="tally.wakeup_fd")
    async def wakeup_fd() -> list[int]:
        """This pool process's pid and the descriptor Python writes signals to (-1: none)."""
        current = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(current)
        return [os.getpid(), current]

    @app.task(name="tally.whose_request")
    async def whose_request(pause: float, context: JobContext = INJECT) -> dict[str, Any]:
        """Celery's view of this job before and after a pause; greenlets alive mid-way."""
        task = context.request_state["celery_task"]

        def seen() -> list[str]:
            return [celery.current_task.request.id, task.request.id]

        before = seen()
        await asyncio.sleep(pause / 2)
        greenlets = sum(1 for each in gc.get_objects() if isinstance(each, greenlet.greenlet))
        await asyncio.sleep(pause / 2)
        return {
            "id": context.request_state["celery_request"].id,
            "before": before,
            "after": seen(),
            "greenlets": greenlets,
        }

    del note_attempt, tick, on_success, on_failure, on_retry, on_revoked
    tally = Tally(queue, celery_app, app, work, fail, price, nested)
    tally.extra = {
        "soft_limited": soft_limited,
        "hard_limited": hard_limited,
        "blocker": blocker,
        "rated": rated,
        "flaky": flaky,
        "collector": collector,
        "wakeup_fd": wakeup_fd,
        "whose_request": whose_request,
    }
    return tally


def worker_env(tally: Tally, **options: Any) -> dict[str, str]:
    """The environment that makes ``-A tests.apps.tally:celery_app`` this very pair.

    ``options`` are ``build()``'s (``storage``, ``broker_url``, ...) and the bridge's.
    """
    options.setdefault("broker_url", str(tally.celery_app.conf.broker_url))
    options.setdefault("result_backend", str(tally.celery_app.conf.result_backend))
    return {"TALLY_QUEUE": tally.queue, "TALLY_BUILD": json.dumps(options)}


default = build(
    queue=os.environ.get("TALLY_QUEUE", f"{BASE_QUEUE}.tally"),
    **json.loads(os.environ.get("TALLY_BUILD", "{}")),
)
celery_app = default.celery_app
app = default.app
