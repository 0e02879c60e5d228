"""A PostgreSQL storage that goes away, at beat start and while beat runs (through a TCP proxy).

Beat must say so once, keep firing the crons it knows, and catch up when the
database answers again; a producer on the direct address keeps adding crons
meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu import Connection

from tests.apps import clock
from tests.faults.proxy import TcpProxy
from tests.helpers import drop_postgres_table
from tests.integration.clock_env import Clock
from tests.servers import POSTGRES_URL, require_postgres

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_proxy(servers: None) -> Iterator[TcpProxy]:
    require_postgres(POSTGRES_URL)
    proxy = TcpProxy(urlsplit(POSTGRES_URL).port or 5432)
    yield proxy
    proxy.close()


def _via(proxy: TcpProxy) -> str:
    parts = urlsplit(POSTGRES_URL)
    host = parts.netloc.rsplit(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{host}:{proxy.port}"))


@pytest.fixture
def crons(tmp_path: Path, pg_proxy: TcpProxy) -> Iterator[Clock]:
    with Connection(clock.BROKER_URL) as conn, contextlib.suppress(Exception):
        conn.channel().queue_purge(clock.QUEUE)
    env = Clock(tmp_path, db=POSTGRES_URL)
    yield env
    for process in reversed(env.processes):
        process.stop()
    drop_postgres_table(env.table)


def _count(env: Clock, job_id: str) -> int:
    return sum(1 for r in env.runs("labelled") if r["job_id"] == job_id)


def _wait(predicate: object, timeout: float, what: str, env: Clock) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            logs = "\n".join(p.log()[-4000:] for p in env.processes)
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


def test_beat_fires_what_it_knows_while_the_storage_is_away(
    crons: Clock, pg_proxy: TcpProxy
) -> None:
    job_id = f"steady-{crons.run}"
    crons.produce("add", job_id, "steady")  # the direct address
    crons.worker()
    beat = crons.beat(CLOCK_DB=_via(pg_proxy))
    _wait(lambda: _count(crons, job_id) >= 2, 20, "the first runs", crons)

    pg_proxy.refuse()  # every connection dropped, new ones refused
    cut = _count(crons, job_id)
    later = f"later-{crons.run}"
    crons.produce("add", later, "later")  # added while beat cannot read it
    _wait(lambda: _count(crons, job_id) >= cut + 4, 20, "runs while the storage is away", crons)
    assert "the Jobify storage is unreachable" in beat.log()
    assert _count(crons, later) == 0

    pg_proxy.accept()
    _wait(lambda: _count(crons, later) >= 1, 30, "the cron added meanwhile", crons)
    assert "answers again" in beat.log()
    assert beat.log().count("the Jobify storage is unreachable") == 1  # once per outage
    times = sorted(r["exec_at"] for r in crons.runs("labelled") if r["job_id"] == job_id)
    assert len(times) == len(set(times))  # no tick fired twice


def test_beat_started_while_the_storage_is_away_catches_up(
    crons: Clock, pg_proxy: TcpProxy
) -> None:
    job_id = f"waiting-{crons.run}"
    crons.produce("add", job_id, "waiting")
    pg_proxy.refuse()
    crons.worker()
    beat = crons.beat(CLOCK_DB=_via(pg_proxy))
    _wait(lambda: "does not answer" in beat.log(), 30, "the log line at start", crons)
    time.sleep(2.0)
    assert _count(crons, job_id) == 0
    assert beat.process.poll() is None  # still running
    pg_proxy.accept()
    _wait(lambda: _count(crons, job_id) >= 2, 30, "runs once the storage answers", crons)
