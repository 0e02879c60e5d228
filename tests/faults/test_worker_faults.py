"""Workers that lose their broker, their result backend or their life lose no job.

Each test counts jobs in the shared Redis (never faulted): sent, finished,
lost (sent but never finished) and duplicated (finished more than once, which
at-least-once delivery allows but which is reported).
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.faults.conftest import proxied_broker_url
from tests.helpers import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.apps.tally import Tally
    from tests.faults.proxy import TcpProxy
    from tests.faults.redis_server import PrivateRedis
    from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration

POOLS = ["prefork", "threads", "asyncio"]


def _concurrency(pool: str) -> int:
    return {"prefork": 2, "threads": 8, "asyncio": 100}[pool]


def _push_all(tally: Tally, ns: str, count: int, seconds: float = 0.0) -> list[str]:
    async def push() -> list[str]:
        return [(await tally.work.push(ns, seconds)).id for _ in range(count)]

    return asyncio.run(_in_app(tally, push()))


async def _in_app(tally: Tally, work: Any) -> Any:
    async with tally.app:
        return await work


def _report(sent: list[str], finished: dict[str, int]) -> tuple[int, int]:
    """Count lost and duplicated jobs, and show the counts (``pytest -s``)."""
    lost = [job for job in sent if job not in finished]
    twice = [job for job, times in finished.items() if times > 1]
    print(  # noqa: T201 - the counts the closing notes quote
        f"\n  sent {len(sent)}, finished {len(finished)}, lost {len(lost)}, "
        f"finished twice {len(twice)}"
    )
    return len(lost), len(twice)


@pytest.mark.parametrize("pool", POOLS)
def test_broker_connection_drops_lose_no_job(
    pool: str,
    broker_proxy: TcpProxy,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    """2,000 jobs while the worker's broker connection is dropped twice."""
    tally = make_tally()  # the producer publishes straight to RabbitMQ
    worker = start_tally_worker(
        tally,
        pool=pool,
        concurrency=_concurrency(pool),
        broker_url=proxied_broker_url(broker_proxy),
    )
    ns = uuid.uuid4().hex[:10]
    sent = _push_all(tally, ns, 2000)
    for drop_at in (300, 900):
        wait_until(lambda n=drop_at: len(tally.finished(ns)) >= n, 60, f"{drop_at} finished")
        broker_proxy.drop()
    wait_until(lambda: len(tally.finished(ns)) >= len(sent), 90, "every job finished")
    lost, twice = _report(sent, tally.finished(ns))
    assert lost == 0
    # At most what each drop caught between delivery and acknowledgement:
    # the prefetch window (4 per slot) and the jobs running.
    assert twice <= 2 * (_concurrency(pool) * 4 + _concurrency(pool))
    # And the worker still obeys a warm shutdown.
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(30)


@pytest.mark.parametrize("pool", POOLS)
def test_a_worker_killed_mid_batch_loses_no_job(
    pool: str,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    tally = make_tally()
    first = start_tally_worker(tally, pool=pool, concurrency=_concurrency(pool))
    ns = uuid.uuid4().hex[:10]
    sent = _push_all(tally, ns, 1000, 0.005)
    wait_until(lambda: len(tally.finished(ns)) >= 400, 60, "400 finished")
    os.killpg(first.pid, signal.SIGKILL)
    first.process.wait(10)
    start_tally_worker(tally, pool=pool, concurrency=_concurrency(pool))
    wait_until(lambda: len(tally.finished(ns)) >= len(sent), 90, "every job finished")
    lost, twice = _report(sent, tally.finished(ns))
    assert lost == 0
    assert twice <= 200  # what the killed worker had taken but not acknowledged


@pytest.mark.parametrize("pool", POOLS)
def test_a_result_backend_outage_loses_no_result(
    pool: str,
    private_redis: PrivateRedis,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
) -> None:
    """500 jobs awaited while the result backend is down for 5 s."""
    tally = make_tally(result_backend=private_redis.url)
    start_tally_worker(tally, pool=pool, concurrency=_concurrency(pool))
    ns = uuid.uuid4().hex[:10]

    async def scenario() -> list[Any]:
        jobs = [await tally.work.push(ns, 0.02) for _ in range(500)]
        while len(tally.finished(ns)) < 100:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(private_redis.restart_after, 5.0)
        return list(await asyncio.wait_for(asyncio.gather(*jobs), 120))

    results = asyncio.run(_in_app(tally, scenario()))
    assert len(results) == 500
    finished = tally.finished(ns)
    assert sorted(results) == sorted(finished)  # each job's own result, none lost
    lost, _ = _report(results, finished)
    assert lost == 0
