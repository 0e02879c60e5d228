"""Per-process runtime: one loop and one started app per pool process."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest

from tests.apps import shop
from tests.integration.conftest import POOL_ENV
from tests.integration.workers import WorkerProcess

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import LoopThread
    from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration


def _entries(kind: str, pid: int) -> int:
    return shop.recorded("lifespan").count(f"{kind}:{pid}")


def test_every_route_is_a_registered_task_in_the_worker(worker: Worker) -> None:
    replies = shop.celery_app.control.inspect([worker.node], timeout=5).registered()
    assert replies, f"worker {worker.node} did not answer inspect registered"
    registered = set(replies[worker.node])
    assert {
        "tests.apps.shop:describe",
        "billing:tests.apps.shop:invoice",
        "billing.refunds:tests.apps.shop:refund",
    } <= registered


def test_each_pool_process_has_one_loop_and_one_started_app(
    worker: Worker, loop_thread: LoopThread
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        jobs = [await shop.process_info.push() for _ in range(40)]
        return list(await asyncio.wait_for(asyncio.gather(*jobs), 60))

    infos = loop_thread.run(scenario(), timeout=90)
    loops: dict[int, set[int]] = defaultdict(set)
    for info in infos:
        loops[info["pid"]].add(info["loop"])
        # Lifespan state is visible to tasks, and is this process's own.
        assert info["lifespan_pid"] == info["pid"]
    assert all(len(ids) == 1 for ids in loops.values()), loops
    for pid in loops:
        assert _entries("enter", pid) == 1, shop.recorded("lifespan")
    if worker.kind == "prefork":
        assert worker.pid not in loops
        assert len(loops) <= 2
        # The prefork parent never started a loop or the app before forking.
        assert _entries("enter", worker.pid) == 0
    elif worker.kind in ("threads", "asyncio"):
        assert set(loops) == {worker.pid}
    else:
        assert set(loops) == {os.getpid()}


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
def test_lifespan_is_left_when_the_worker_stops(pool: str, shop_app: Any, tmp_path: Path) -> None:
    node = f"{shop.LIFECYCLE_QUEUE}-{pool}@test"
    process = WorkerProcess(
        app_path="tests.apps.shop:celery_app",
        celery_app=shop.celery_app,
        queues=[shop.LIFECYCLE_QUEUE],
        node=node,
        pool="custom" if pool in POOL_ENV else pool,
        concurrency=2,
        log_path=tmp_path / "worker.log",
        extra_env=POOL_ENV.get(pool),
    )
    try:
        process.wait_ready()
        results = [
            shop.celery_app.send_task("tests.apps.shop:process_info", queue=shop.LIFECYCLE_QUEUE)
            for _ in range(10)
        ]
        pids = {r.get(timeout=30)["pid"] for r in results}
    finally:
        exit_code = process.stop()
    assert exit_code == 0, process.log()
    for pid in pids:
        assert _entries("enter", pid) == 1
        assert _entries("exit", pid) == 1, process.log()
    if pool == "prefork":
        assert process.pid not in pids
        assert _entries("enter", process.pid) == 0
    else:
        assert pids == {process.pid}
