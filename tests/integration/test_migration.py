"""Moving a Celery project to Jobify middleware, one task at a time."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from celery import chain, chord, group
from kombu import Connection

from tests.apps import legacy
from tests.apps.shop import recorded
from tests.integration.conftest import POOL_ENV
from tests.integration.workers import WorkerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import LoopThread

pytestmark = pytest.mark.integration

WAIT = 30.0


def _worker(
    tmp: Path, queues: list[str], name: str, concurrency: int = 2, pool: str = "prefork"
) -> WorkerProcess:
    process = WorkerProcess(
        app_path="tests.apps.legacy:celery_app",
        celery_app=legacy.celery_app,
        queues=queues,
        node=f"{legacy.QUEUE}-{name}@test",
        pool="custom" if pool in POOL_ENV else pool,
        concurrency=concurrency,
        log_path=tmp / f"{name}.log",
        extra_env=POOL_ENV.get(pool),
    )
    process.wait_ready()
    return process


@pytest.fixture(scope="module")
def legacy_app(servers: None, loop_thread: LoopThread) -> Iterator[None]:
    loop_thread.run(legacy.app.startup())
    yield
    loop_thread.run(legacy.app.shutdown())
    with Connection(legacy.BROKER_URL) as conn:
        channel = conn.channel()
        for queue in (legacy.QUEUE, legacy.INVOICES, legacy.PRIORITY):
            channel.queue_delete(queue)


@pytest.fixture(scope="module", params=["prefork", "asyncio"])
def legacy_worker(
    request: pytest.FixtureRequest, legacy_app: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker of the half-moved project: prefork, and the asyncio pool (sync tasks on threads)."""
    pool: str = request.param
    process = _worker(
        tmp_path_factory.mktemp(f"legacy-{pool}"),
        [legacy.QUEUE, legacy.INVOICES],
        f"main-{pool}",
        concurrency=2 if pool == "prefork" else 20,
        pool=pool,
    )
    process.pool = pool  # type: ignore[attr-defined]
    yield process
    process.stop()


def test_plain_celery_tasks_keep_running_where_celery_runs_them(
    legacy_worker: WorkerProcess,
) -> None:
    thread = _send("legacy.plain_thread").get(timeout=WAIT)
    if legacy_worker.pool == "asyncio":  # type: ignore[attr-defined]
        assert thread.startswith("jobify-celery-sync")  # a bounded thread pool, not the loop
    else:
        assert thread == "MainThread"


def _send(name: str, *args: Any, **options: Any) -> Any:
    return legacy.celery_app.send_task(name, list(args), **options)


def test_messages_queued_before_the_switch_run_through_the_middleware(
    legacy_app: None, tmp_path: Path
) -> None:
    # Published by an old producer while no worker runs (this module's worker
    # starts with the first test that asks for it, after this one)...
    queued = [_send("legacy.greet", f"guest{i}") for i in range(3)]
    time.sleep(0.5)
    # ...and consumed by the migrated worker once it starts.
    process = _worker(tmp_path, [legacy.QUEUE], f"queued-{uuid.uuid4().hex[:6]}")
    try:
        for result in queued:
            assert result.get(timeout=WAIT).startswith("hello guest")
            assert recorded(f"legacy:{result.id}") == ["signal:prerun", "middleware:legacy.greet"]
    finally:
        process.stop()


def test_an_old_producer_sending_by_name_keeps_working(legacy_worker: WorkerProcess) -> None:
    result = _send("legacy.greet", "ann")
    text = result.get(timeout=WAIT)
    # bind=True keeps `self`: the request is the executing task's.
    assert text == f"hello ann (retries=0, task={result.id})"
    assert "middleware:legacy.greet" in recorded(f"legacy:{result.id}")
    # .delay() on the wrapped route (old call sites) and on the Celery task.
    assert legacy.greet.delay("bo").get(timeout=WAIT).startswith("hello bo")
    assert (
        legacy.celery_app.tasks["legacy.greet"].delay("cy").get(timeout=WAIT).startswith("hello cy")
    )


def test_self_retry_of_a_bound_task_still_works(legacy_worker: WorkerProcess) -> None:
    result = _send("legacy.greet", "dee", True)
    assert result.get(timeout=WAIT).startswith("hello dee (retries=1")
    assert recorded(f"legacy:{result.id}").count("middleware:legacy.greet") == 2


def test_jobify_push_works_on_a_wrapped_task(
    legacy_worker: WorkerProcess, loop_thread: LoopThread
) -> None:
    async def scenario() -> Any:
        job = await legacy.greet.push("eve")
        return job, await asyncio.wait_for(job, WAIT)

    job, text = loop_thread.run(scenario())
    assert text == f"hello eve (retries=0, task={job.id})"


def test_a_varargs_task_passes_plain_json_through(legacy_worker: WorkerProcess) -> None:
    payload = [1, "two", {"three": [3]}]
    assert _send("legacy.varargs", *payload).get(timeout=WAIT) == payload


def test_canvas_carries_typed_results(legacy_worker: WorkerProcess) -> None:
    tasks = legacy.celery_app.tasks
    assert (
        chain(tasks["legacy.make_point"].s(3, 4), tasks["legacy.norm"].s())().get(timeout=WAIT)
        == 5.0
    )
    points = group(tasks["legacy.make_point"].s(i, 0) for i in range(3))().get(timeout=WAIT)
    assert points == [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 2, "y": 0}]  # readable
    header = [tasks["legacy.make_point"].s(6, 8)]
    # chord callbacks get a list of results: the first is the Point's fields.
    assert chord(header)(tasks["legacy.varargs"].s()).get(timeout=WAIT)[0][0] == {"x": 6, "y": 8}


def test_task_routes_reach_a_custom_exchange_and_queue(
    legacy_worker: WorkerProcess, loop_thread: LoopThread, published: list[tuple[str, str]]
) -> None:
    async def scenario() -> str:
        job = await legacy.route_me.push(7)
        return await asyncio.wait_for(job, WAIT)

    via = f"via {legacy.BILLING_EXCHANGE.name} invoice.created"
    assert loop_thread.run(scenario()) == f"routed 7 {via}"
    result = legacy.celery_app.tasks["legacy.route_me"].delay(8)
    assert result.get(timeout=WAIT) == f"routed 8 {via}"
    assert {name for _, name in published} == {"legacy.route_me"}


def test_priority_queues_deliver_high_priority_first(legacy_app: None, tmp_path: Path) -> None:
    task = legacy.celery_app.tasks["legacy.prioritised"]
    results = [task.apply_async((f"low{i}",), priority=1) for i in range(4)]
    results.append(task.apply_async(("high",), priority=9))
    time.sleep(0.5)
    worker = _worker(tmp_path, [legacy.PRIORITY], "priority", concurrency=1)
    try:
        for result in results:
            result.get(timeout=WAIT)
    finally:
        worker.stop()
    order = recorded("legacy:priority-order")
    assert order[0] == "high", order
