"""Two beats, the lock holder killed and the lock's Redis restarted: no tick fires twice."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.apps.tally import worker_env
from tests.helpers import wait_until
from tests.integration.workers import BeatProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.apps.tally import Tally
    from tests.faults.redis_server import PrivateRedis
    from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration

HOLDS = "This beat holds the lock"


@pytest.fixture
def beats() -> Iterator[list[BeatProcess]]:
    started: list[BeatProcess] = []
    yield started
    for process in started:
        process.stop()


def test_no_tick_fires_twice_across_a_takeover_and_a_redis_restart(
    tmp_path: Path,
    private_redis: PrivateRedis,
    make_tally: Callable[..., Tally],
    start_tally_worker: Callable[..., WorkerProcess],
    beats: list[BeatProcess],
) -> None:
    db = str(tmp_path / f"crons-{uuid.uuid4().hex[:6]}.db")
    tally = make_tally(result_backend=private_redis.url, storage=db)
    start_tally_worker(tally, pool="threads", concurrency=4, storage=db)
    env = worker_env(tally, storage=db)

    def start_beat() -> BeatProcess:
        index = len(beats)
        process = BeatProcess(
            app_path="tests.apps.tally:celery_app",
            schedule_path=tmp_path / f"beat{index}-schedule",
            log_path=tmp_path / f"beat{index}.log",
            extra_env=env,
        )
        beats.append(process)
        return process

    def ticks() -> dict[str, int]:
        return tally.runs("ticks")

    def latest() -> int:
        return max((int(run) for run in ticks()), default=0)

    first = start_beat()
    wait_until(lambda: HOLDS in first.log(), 20, "the first beat holds the lock")
    second = start_beat()
    wait_until(lambda: latest() >= 4, 30, "4 ticks")

    # The holder dies (no clean release): the standby takes over after the lease.
    os.killpg(first.pid, signal.SIGKILL)
    first.process.wait(10)
    before_takeover = latest()
    wait_until(lambda: HOLDS in second.log(), 20, "the standby takes the lock")
    wait_until(lambda: latest() >= before_takeover + 3, 30, "ticks after the takeover")

    # The lock's Redis goes away for 2 s; a new standby joins meanwhile.
    private_redis.kill()
    third = start_beat()
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
