"""The bridge end to end: producer, broker, worker and result backend.

Every test here runs once per worker kind (in-process threads worker, real
`celery worker` with prefork, threads, and the asyncio pool).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import redis
from celery import chain, chord, group
from celery.result import AsyncResult
from jobify import JobStatus
from jobify.exceptions import JobFailedError, JobTimeoutError
from kombu import Connection

from jobify_celery import ArgumentLoadError, UnsupportedTriggerError
from tests.apps import shop

if TYPE_CHECKING:
    from tests.conftest import LoopThread
    from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration

WAIT = 30.0


def _task(name: str) -> Any:
    return shop.celery_app.tasks[f"tests.apps.shop:{name}"]


def test_push_runs_remotely_with_a_rebuilt_context(worker: Worker, loop_thread: LoopThread) -> None:
    async def scenario() -> tuple[Any, dict[str, Any], bool, bool]:
        job = await shop.describe.push(7, label="hi")
        in_flight = shop.app.find_job(job.id) is job and job in shop.app.get_active_jobs()
        result = await asyncio.wait_for(job.wait(), WAIT)
        assert result is None
        gone = shop.app.find_job(job.id) is None
        return job, job.result(), in_flight, gone

    job, result, in_flight, gone = loop_thread.run(scenario())
    assert in_flight
    assert gone
    assert job.status is JobStatus.SUCCESS
    # The Jobify job id is the Celery task id.
    assert result["job_id"] == job.id == result["celery_request_id"]
    assert result["x"] == 7
    assert result["x_type"] == "int"
    assert result["label"] == "hi"
    assert result["status"] == "running"
    assert datetime.fromisoformat(result["exec_at"]) == job.exec_at
    # The producer's outer middleware ran, with a complete OuterContext, and
    # what it stored in request_state reached the worker.
    assert result["outer"] == ["root"]
    assert result["outer_context"] == {
        "trigger": "PushArguments",
        "job_id": job.id,
        "arguments": ["label", "x"],
        "func": "describe",
        "route": "tests.apps.shop:describe",
        "flags": [False, False],
        "has_app": True,
    }
    assert result["inner"] == ["A", "B"]
    assert {"celery_request", "celery_task", "inner", "outer"} <= set(result["request_state_keys"])
    assert result["celery_task_name"] == "tests.apps.shop:describe"
    assert result["lifespan_greeting"] == "hello"
    assert result["injected_job_is_ctx_job"] is True
    assert result["injected_state_is_ctx_state"] is True
    assert result["runnable_name"] == result["builder_name"] == "tests.apps.shop:describe"
    assert result["config_tz"] == "UTC"
    assert result["app_is_app"] is True
    if worker.kind == "inprocess":
        assert result["pid"] == os.getpid()
    elif worker.kind in ("threads", "asyncio"):
        assert result["pid"] == worker.pid
    else:
        assert result["pid"] != worker.pid


def test_failure_reaches_the_job_with_type_and_message(
    worker: Worker, loop_thread: LoopThread
) -> None:
    async def scenario() -> Any:
        job = await shop.fail.push("no such order")
        await asyncio.wait_for(job.wait(), WAIT)
        return job

    job = loop_thread.run(scenario())
    assert job.status is JobStatus.FAILED
    assert type(job.exception) is LookupError
    assert str(job.exception) == "no such order"
    with pytest.raises(JobFailedError) as caught:
        job.result()
    assert caught.value.reason == "no such order"
    assert type(caught.value.__cause__) is LookupError


def test_timeout_cancels_the_async_function(worker: Worker, loop_thread: LoopThread) -> None:
    async def scenario() -> Any:
        job = await shop.slow.push(5.0)
        await asyncio.wait_for(job.wait(), WAIT)
        return job

    started = time.monotonic()
    job = loop_thread.run(scenario())
    assert time.monotonic() - started < 4.0
    assert job.status is JobStatus.TIMEOUT
    assert isinstance(job.exception, JobTimeoutError)


def test_exception_handler_result_becomes_the_result(
    worker: Worker, loop_thread: LoopThread
) -> None:
    assert loop_thread.run(_push_and_await(shop.handled, "k")) == "handled:k"


def test_inner_chain_is_an_onion(worker: Worker, loop_thread: LoopThread) -> None:
    assert loop_thread.run(_push_and_await(shop.onion)) == "A(B(A>B>f))"


def test_router_routes_run_under_prefixed_names(
    worker: Worker, loop_thread: LoopThread, published: list[tuple[str, str]]
) -> None:
    # Root middleware, then the router's: outer (root, router) and inner (A, B, R).
    assert loop_thread.run(_push_and_await(shop.invoice, 3)) == "A(B(R(invoice3:root,router)))"
    assert loop_thread.run(_push_and_await(shop.refund, Decimal("2.50"))) == Decimal("-2.50")
    assert {name for _, name in published} == {
        "billing:tests.apps.shop:invoice",
        "billing.refunds:tests.apps.shop:refund",
    }


def test_typed_values_round_trip(worker: Worker, loop_thread: LoopThread) -> None:
    order = shop.Order(
        id=uuid.uuid4(),
        placed=datetime(2026, 11, 28, 12, 30, tzinfo=UTC),
        due=date(2026, 12, 1),
        total=Decimal("19.99"),
        color=shop.Color.BLUE,
        lines=[shop.Line("sku-1", 2), shop.Line("sku-2", 1)],
    )
    assert loop_thread.run(_push_and_await(shop.echo_order, order)) == order
    result = loop_thread.run(
        _push_and_await(
            shop.echo_types,
            datetime(2026, 1, 1, tzinfo=UTC),
            date(2026, 1, 2),
            uuid.uuid4(),
            Decimal("1.5"),
            shop.Color.RED,
            4,
            5,
            note="x",
        )
    )
    assert result == {
        "types": ["datetime", "date", "UUID", "Decimal", "Color"],
        "rest": [4, 5],
        "extra": {"note": "x"},
    }


def test_sync_functions_follow_run_mode(worker: Worker, loop_thread: LoopThread) -> None:
    loop_thread_name = loop_thread.run(_push_and_await(shop.loop_thread_name))
    assert loop_thread.run(_push_and_await(shop.sync_main_thread)) == loop_thread_name
    assert loop_thread.run(_push_and_await(shop.sync_default)) != loop_thread_name
    assert loop_thread.run(_push_and_await(shop.sync_main)) is True
    # In-process: the producer's loop; prefork children drive their loop on
    # their main thread; the threads and asyncio pools have a loop thread.
    expected = {
        "inprocess": "test-loop",
        "prefork": "MainThread",
        "threads": "jobify-celery-loop",
        "asyncio": "jobify-celery-loop",
    }
    assert loop_thread_name == expected[worker.kind]


def test_celery_task_signals_fire_around_the_call(worker: Worker, loop_thread: LoopThread) -> None:
    async def scenario() -> str:
        job = await shop.add.push(1, 2)
        assert await asyncio.wait_for(job, WAIT) == 3
        return job.id

    job_id = loop_thread.run(scenario())
    assert _eventually(lambda: shop.recorded(f"signals:{job_id}") == ["prerun", "postrun"])


def test_schedule_builder_pushes_follow_ups_through_the_broker(
    worker: Worker, loop_thread: LoopThread, published: list[tuple[str, str]]
) -> None:
    key = f"countdown-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(shop.RESULT_BACKEND)
    client.set(f"{shop.QUEUE}:{key}:left", 3, ex=600)
    client.close()
    first = loop_thread.run(_push_and_await(shop.countdown, key))
    assert first == 2
    assert _eventually(lambda: len(shop.recorded(key)) == 3)
    runs = shop.recorded(key)
    assert len(set(runs)) == 3
    for job_id in runs:
        assert AsyncResult(job_id, app=shop.celery_app).get(timeout=WAIT) in (0, 1, 2)
    if worker.kind == "inprocess":
        # Follow-ups published from this process went through before_task_publish.
        assert set(runs) <= {task_id for task_id, _ in published}


def test_plain_celery_clients_run_the_same_inner_chain(worker: Worker) -> None:
    app = shop.celery_app
    assert app.send_task("tests.apps.shop:add", [2, 3]).get(timeout=WAIT) == 5
    assert _task("add").delay(a=1, b=2).get(timeout=WAIT) == 3
    assert _task("add").apply_async((4, 5)).get(timeout=WAIT) == 9
    assert chain(_task("add").s(1, 2), _task("add").s(10))().get(timeout=WAIT) == 13
    assert group(_task("add").s(i, i) for i in range(3))().get(timeout=WAIT) == [0, 2, 4]
    header = [_task("add").s(i, 1) for i in range(3)]
    assert chord(header)(_task("total").s()).get(timeout=WAIT) == 6
    assert app.send_task("tests.apps.shop:onion").get(timeout=WAIT) == "A(B(A>B>f))"
    described = app.send_task("tests.apps.shop:describe", [5]).get(timeout=WAIT)
    assert described["outer"] is None
    assert described["inner"] == ["A", "B"]
    assert (
        abs(datetime.fromisoformat(described["exec_at"]) - datetime.now(UTC)).total_seconds() < 30
    )
    # Plain JSON is read into the annotated types.
    plain_order = {
        "id": str(uuid.uuid4()),
        "placed": "2026-11-28T12:30:00+00:00",
        "due": "2026-12-01",
        "total": "19.99",
        "color": "blue",
        "lines": [{"sku": "a", "qty": 1}],
    }
    echoed = app.send_task("tests.apps.shop:echo_order", [plain_order]).get(timeout=WAIT)
    # ...and the typed result goes back as plain JSON, what a Celery client reads.
    assert echoed == plain_order


def test_a_push_is_followed_by_the_watcher_alone(worker: Worker, loop_thread: LoopThread) -> None:
    """Celery's send-time result subscription is left out for pushes, kept for .delay()."""

    async def scenario() -> tuple[bool, int, bool, str]:
        backend = shop.celery_app.backend  # the loop thread's own (Celery's are per thread)
        subscribed = backend.result_consumer.subscribed_to
        job = await shop.add.push(2, 3)
        pushed_subscribed = backend.get_key_for_task(job.id) in subscribed
        await asyncio.wait_for(job.wait(), WAIT)
        delayed = _task("add").delay(4, 5)
        delayed_subscribed = backend.get_key_for_task(delayed.id) in subscribed
        return pushed_subscribed, job.result(), delayed_subscribed, delayed.id

    pushed_subscribed, pushed, delayed_subscribed, delayed_id = loop_thread.run(scenario())
    assert not pushed_subscribed
    assert pushed == 5
    assert delayed_subscribed
    assert AsyncResult(delayed_id, app=shop.celery_app).get(timeout=WAIT) == 9


def test_arguments_that_do_not_bind_fail_before_publishing(
    worker: Worker, loop_thread: LoopThread, published: list[tuple[str, str]]
) -> None:
    async def scenario() -> None:
        await shop.describe.push("a", "b", "c", "d")  # type: ignore[call-arg]

    with pytest.raises(TypeError, match="too many positional arguments"):
        loop_thread.run(scenario())
    with pytest.raises(TypeError):
        _task("add").delay(1, 2, 3)
    assert published == []


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("add", [1], "missing a required argument: 'b'"),
        ("add", [1, 2, 3], "too many positional arguments"),
        ("add", ["one", 2], "parameter 'a': cannot load the value: CoercionError: expected int"),
        ("echo_order", [{"id": "nope"}], "parameter 'order'"),
    ],
)
def test_messages_whose_arguments_do_not_load_fail_once(
    worker: Worker, name: str, args: list[Any], expected: str
) -> None:
    result = shop.celery_app.send_task(f"tests.apps.shop:{name}", args)
    with pytest.raises(ArgumentLoadError) as caught:
        result.get(timeout=WAIT)
    assert f"task 'tests.apps.shop:{name}'" in str(caught.value)
    assert expected in str(caught.value)
    assert result.state == "FAILURE"
    time.sleep(0.5)
    # Run once, acknowledged: not redelivered.
    assert shop.recorded(f"signals:{result.id}") == ["prerun", "postrun"]


def test_unknown_task_is_rejected_to_the_dead_letter_queue(worker: Worker) -> None:
    result = shop.celery_app.send_task(
        "tests.apps.shop:no_such_task", [1], queue=shop.DEAD_LETTER_SOURCE
    )
    with pytest.raises(Exception, match="no_such_task"):
        result.get(timeout=WAIT)
    assert result.state == "FAILURE"
    with Connection(shop.BROKER_URL) as conn:
        channel = conn.channel()
        found = None
        deadline = time.monotonic() + WAIT
        while found is None and time.monotonic() < deadline:
            found = channel.basic_get(shop.DEAD_LETTER_QUEUE, no_ack=True)
            if found is None:
                time.sleep(0.1)
    assert found is not None, "the rejected message did not reach the dead-letter queue"
    assert found.headers["task"] == "tests.apps.shop:no_such_task"
    assert found.headers["id"] == result.id


def test_an_outer_middleware_can_stop_the_publish(
    worker: Worker, loop_thread: LoopThread, published: list[tuple[str, str]]
) -> None:
    async def scenario() -> Any:
        return await shop.describe.push(1, stop_here=True)

    job = loop_thread.run(scenario())
    assert job.status is JobStatus.PENDING
    assert shop.app.find_job(job.id) is None
    assert published == []


def test_many_waiters_use_no_thread_per_job_and_never_block_the_loop(
    worker: Worker, loop_thread: LoopThread
) -> None:
    async def scenario() -> tuple[list[int], float, int]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        threads_before = threading.active_count()
        tick = asyncio.create_task(ticker())
        jobs = [await shop.add.push(i, 1) for i in range(200)]
        results = await asyncio.wait_for(asyncio.gather(*jobs), 60)
        extra_threads = threading.active_count() - threads_before
        stop.set()
        await tick
        return results, max(gaps), extra_threads

    results, worst_gap, extra_threads = loop_thread.run(scenario(), timeout=90)
    assert results == [i + 1 for i in range(200)]
    assert extra_threads <= 2
    assert worst_gap < 1.0


def test_declared_crons_start_no_local_timer_and_runtime_cron_is_refused(
    worker: Worker, loop_thread: LoopThread, published: list[tuple[str, str]]
) -> None:
    async def scenario() -> None:
        await asyncio.sleep(1.5)
        with pytest.raises(UnsupportedTriggerError, match="beat"):
            await shop.add.schedule(1, 2).cron("* * * * *", job_id="runtime-cron")

    loop_thread.run(scenario())
    assert published == []
    assert shop.recorded("every_second") == []
    assert shop.app.find_job("runtime-cron") is None


async def _push_and_await(route: Any, *args: Any, **kwargs: Any) -> Any:
    job = await route.push(*args, **kwargs)
    return await asyncio.wait_for(job, WAIT)


def _eventually(check: Any, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())
