"""Messages a worker cannot run are settled once, named in the log, and stall nothing.

Raw messages are published with kombu straight to a tally queue, as a buggy or
foreign producer would, then one good job proves the worker goes on.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from celery.result import AsyncResult
from kombu import Connection, Producer

from tests.helpers import queue_depth, wait_until
from tests.servers import BROKER_URL

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.apps.tally import Tally
    from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration


def _publish(
    queue: str,
    task: str,
    body: Any,
    *,
    content_type: str = "application/json",
    **headers: Any,
) -> str:
    task_id = uuid.uuid4().hex
    message_headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "poison@test",
        **headers,
    }
    if isinstance(body, bytes):
        payload = body
    elif content_type == "application/json":
        payload = json.dumps(body).encode()
    else:
        payload = pickle.dumps(body)
    with Connection(BROKER_URL) as conn:
        Producer(conn).publish(
            payload,
            routing_key=queue,
            headers=message_headers,
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
            correlation_id=task_id,
            delivery_mode=2,
        )
    return task_id


def _call(args: list[Any]) -> list[Any]:
    return [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio"])
def test_poison_is_settled_once_and_the_next_job_runs(
    pool: str,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    tally = make_tally()
    worker = start_tally_worker(tally, pool=pool, concurrency=2 if pool == "prefork" else 4)
    ns = uuid.uuid4().hex[:10]
    queue = tally.queue
    app = tally.celery_app

    bad_json = _publish(queue, "tally.work", b'[["x"], {}, {"callbacks": nul')
    unknown = _publish(queue, "tally.no_such_task", _call([]))
    pickled = _publish(
        queue, "tally.work", _call([ns]), content_type="application/x-python-serialize"
    )
    bad_eta = _publish(queue, "tally.work", _call([ns]), eta="the day after tomorrow")
    arity = _publish(queue, "tally.work", _call([ns, 1, 2, 3]))
    decimal = _publish(queue, "tally.price", _call([ns, {"__decimal__": "abc"}, "light"]))
    shade = _publish(queue, "tally.price", _call([ns, "1.50", "purple"]))
    headers = {
        "not-json": "{v:1",
        "wrong-types": '{"v":1,"exec_at":17,"request_state":[1,2]}',
        "reserved": '{"v":1,"request_state":{"attempt":99,"celery_task":"x","kept":1}}',
    }
    header_jobs = {
        name: _publish(queue, "tally.work", _call([ns]), jobify=raw)
        for name, raw in headers.items()
    }

    async def good_job() -> str:
        async with tally.app:
            job = await tally.work.push(ns)
            return str(await asyncio.wait_for(job, 30))

    good = asyncio.run(good_job())
    assert good in tally.finished(ns)
    wait_until(lambda: queue_depth(queue) == 0, 30)

    # Arguments that do not load: one failed attempt each, retry route included.
    for task_id, parameter in ((arity, None), (decimal, "amount"), (shade, "shade")):
        result = AsyncResult(task_id, app=app)
        wait_until(lambda r=result: r.state == "FAILURE", 30)
        assert type(result.result).__name__ == "ArgumentLoadError", result.result
        if parameter is not None:
            assert f"parameter {parameter!r}" in str(result.result)
        assert tally.runs("attempts").get(task_id) == 1, tally.runs("attempts")
    assert decimal not in tally.runs(ns)

    # A task nobody knows: failed, named, never retried.
    assert AsyncResult(unknown, app=app).state == "FAILURE"
    assert "tally.no_such_task" in worker.log()
    # Undecodable or refused bodies and a bad ETA never run a job.
    for task_id in (bad_json, pickled, bad_eta):
        assert task_id not in tally.runs(ns)
        assert task_id not in tally.runs("attempts")

    # A bad header: the job runs, and the log names the task and the problem.
    for task_id in header_jobs.values():
        wait_until(lambda t=task_id: tally.finished(ns).get(t) == 1, 30)
    log = worker.log()
    assert f"tally.work[{header_jobs['not-json']}]: the jobify header is not JSON" in log
    assert "request_state is a list" in log
    assert "exec_at 17 is not an ISO 8601 time" in log
    assert f"tally.work[{header_jobs['reserved']}]: request_state keys" in log
