"""Beat under faults: no tick twice across a takeover, none lost while the broker is away."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.apps.tally import worker_env
from tests.faults.conftest import proxied_broker_url
from tests.helpers import wait_until
from tests.integration.workers import BeatProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.apps.tally import Tally
    from tests.faults.proxy import TcpProxy
    from tests.faults.redis_server import PrivateRedis
    from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration

HOLDS = "This beat holds the lock"


@pytest.fixture
def start_beat(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], BeatProcess]]:
    """Start `celery beat` processes of the tally app (``env``: its build); all stop at the end."""
    started: list[BeatProcess] = []

    def start(env: dict[str, str]) -> BeatProcess:
        index = len(started)
        process = BeatProcess(
            app_path="tests.apps.tally:celery_app",
            schedule_path=tmp_path / f"beat{index}-schedule",
            log_path=tmp_path / f"beat{index}.log",
            extra_env=env,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_no_tick_fires_twice_across_a_takeover_and_a_redis_restart(
    tmp_path: Path,
    private_redis: PrivateRedis,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
    start_beat: Callable[[dict[str, str]], BeatProcess],
) -> None:
    db = str(tmp_path / f"crons-{uuid.uuid4().hex[:6]}.db")
    tally = make_tally(result_backend=private_redis.url, storage=db)
    start_tally_worker(tally, pool="threads", concurrency=4, storage=db)
    env = worker_env(tally, storage=db)

    def ticks() -> dict[str, int]:
        return tally.runs("ticks")

    def latest() -> int:
        return max((int(run) for run in ticks()), default=0)

    first = start_beat(env)
    wait_until(lambda: HOLDS in first.log(), 20, "the first beat holds the lock")
    second = start_beat(env)
    wait_until(lambda: latest() >= 4, 30, "4 ticks")

    # The holder dies (no clean release): the standby takes over after the lease.
    os.killpg(first.pid, signal.SIGKILL)
    first.process.wait(10)
    before_takeover = latest()
    wait_until(lambda: HOLDS in second.log(), 20, "the standby takes the lock")
    wait_until(lambda: latest() >= before_takeover + 3, 30, "ticks after the takeover")

    # The lock's Redis goes away for 2 s; a new standby joins meanwhile.
    private_redis.kill()
    third = start_beat(env)
    time.sleep(2.0)
    private_redis.start()
    before_restart = latest()
    wait_until(lambda: latest() >= before_restart + 4, 40, "ticks after the Redis restart")
    time.sleep(2.0)

    counted = ticks()
    twice = {run: times for run, times in counted.items() if times > 1}
    assert not twice, (twice, second.log()[-2000:], third.log()[-2000:])
    assert second.process.poll() is None, second.log()[-3000:]
    assert third.process.poll() is None, third.log()[-3000:]


def test_ticks_fired_while_the_broker_is_away_are_published_once_it_is_back(
    tmp_path: Path,
    broker_proxy: TcpProxy,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
    start_beat: Callable[[dict[str, str]], BeatProcess],
) -> None:
    db = str(tmp_path / f"crons-{uuid.uuid4().hex[:6]}.db")
    tally = make_tally(storage=db)
    start_tally_worker(tally, pool="threads", concurrency=4, storage=db)
    # Beat alone reaches the broker through the proxy, and gives a publish 1 s.
    env = worker_env(
        tally, storage=db, broker_url=proxied_broker_url(broker_proxy), publish_timeout=1.0
    )
    beat = start_beat(env)

    def runs() -> list[int]:
        return sorted(int(run) for run in tally.runs("ticks"))

    wait_until(lambda: len(runs()) >= 3, 30, "3 ticks")
    # Away from a third of a second after a tick (its publish is done) for 8 s:
    # several publishes time out, and their ticks wait.
    wait_until(lambda: time.time() % 1 > 0.3, 2, "a third of a second")
    broker_proxy.refuse()
    away_from = runs()[-1]
    time.sleep(8.0)
    broker_proxy.accept()
    wait_until(lambda: max(runs()) >= away_from + 12, 40, "ticks after the broker is back")

    log = beat.log()
    assert "cron run(s) wait to be published" in log, log[-3000:]
    assert "that waited for the broker" in log, log[-3000:]
    assert "is lost" not in log, log[-3000:]
    counted = tally.runs("ticks")
    assert all(times == 1 for times in counted.values()), counted
    numbers = runs()
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), numbers
