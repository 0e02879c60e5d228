"""Run-time crons on SQLite (one host) and PostgreSQL (several): atomic adds, beat follows.

Producers are processes of their own (``tests.apps.cron_producer``), as on
several hosts; beat and the worker are real ``celery`` processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
import redis
from kombu import Connection

from tests.apps import clock
from tests.helpers import drop_postgres_table
from tests.integration.clock_env import Clock
from tests.integration.workers import REPO_ROOT
from tests.servers import POSTGRES_URL, RESULT_BACKEND, require_postgres

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

FEED_KEY = f"jobify-celery:cron-feed:{clock.celery_app.main}"


@pytest.fixture(params=["sqlite", "postgres"])
def crons(request: pytest.FixtureRequest, servers: None, tmp_path: Path) -> Iterator[Clock]:
    """A beat test's processes on SQLite, or on a PostgreSQL table of its own."""
    with Connection(clock.BROKER_URL) as conn, contextlib.suppress(Exception):
        conn.channel().queue_purge(clock.QUEUE)
    if request.param == "postgres":
        require_postgres(POSTGRES_URL)
        env = Clock(tmp_path, db=POSTGRES_URL)
    else:
        env = Clock(tmp_path)
    yield env
    for process in reversed(env.processes):
        process.stop()
    if request.param == "postgres":
        drop_postgres_table(env.table)


def _race(env: Clock, operations: list[list[str]]) -> list[dict[str, Any]]:
    """Start one producer process per operation list; all act at the same moment."""
    at = time.time() + 4.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.apps.cron_producer", f"{at:.6f}", *ops],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ops in operations
    ]
    answers = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        answers.append(json.loads(stdout.strip().splitlines()[-1]))
    assert all(a["ended"][0] >= at for a in answers), "a producer acted before the moment"
    return answers


def _labels(env: Clock, job_id: str, after: float = 0.0) -> list[str]:
    return [
        r["label"]
        for r in env.runs("labelled")
        if r["job_id"] == job_id and datetime.fromisoformat(r["exec_at"]).timestamp() > after
    ]


def test_producers_racing_on_one_id_exactly_one_adds_it(crons: Clock) -> None:
    job_id = f"race-{crons.run}"
    answers = _race(crons, [["add", job_id, f"p{index}"] for index in range(4)])
    outcomes = sorted(a["outcomes"][0] for a in answers)
    assert outcomes == ["added", "duplicate", "duplicate", "duplicate"]
    winner = next(f"p{i}" for i, a in enumerate(answers) if a["outcomes"][0] == "added")
    crons.worker()
    crons.beat()
    crons.wait_runs("labelled", 2)
    assert set(_labels(crons, job_id)) == {winner}  # the one stored is the winner's


def test_replacing_producers_all_succeed_and_one_definition_fires(crons: Clock) -> None:
    job_id = f"replace-{crons.run}"
    answers = _race(crons, [["replace", job_id, f"p{index}"] for index in range(4)])
    assert [a["outcomes"][0] for a in answers] == ["replaced"] * 4
    crons.worker()
    crons.beat()
    crons.wait_runs("labelled", 3)
    assert len(set(_labels(crons, job_id))) == 1  # one definition: the last written


def test_beat_follows_adds_replaces_and_cancels_within_a_second(crons: Clock) -> None:
    crons.worker()
    beat = crons.beat()
    job_id = f"follow-{crons.run}"
    time.sleep(2.0)  # beat is up, holding the lock, with its full read done
    added_at = crons.produce("add", job_id, "first")["ended"][0]
    crons.wait_runs("labelled", 1, timeout=10)
    first = datetime.fromisoformat(crons.runs("labelled")[0]["exec_at"]).timestamp()
    assert first - added_at < 2.0

    replaced_at = crons.produce("replace", job_id, "second")["ended"][0]
    deadline = time.monotonic() + 10
    while not _labels(crons, job_id, after=replaced_at):
        assert time.monotonic() < deadline, "the replaced cron never ran"
        time.sleep(0.05)
    assert _labels(crons, job_id, after=replaced_at + 2.0) in ([], ["second"], ["second"] * 2)
    late = [label for label in _labels(crons, job_id, after=replaced_at + 1.5) if label != "second"]
    assert late == []

    cancelled_at = crons.produce("cancel", job_id, "second")["ended"][0]
    time.sleep(3.0)
    assert _labels(crons, job_id, after=cancelled_at + 1.5) == []
    # Followed through the feed: one full read of the storage, at start.
    assert beat.log().count("stored crons in") == 1


def test_beat_rereads_the_storage_when_the_feed_was_lost(crons: Clock) -> None:
    crons.worker()
    beat = crons.beat()
    seen = f"seen-{crons.run}"
    missed = f"missed-{crons.run}"
    time.sleep(2.0)
    crons.produce("add", seen, "seen")
    crons.wait_runs("labelled", 1, timeout=10)
    # A cron stored while its announcement is lost with the whole feed (as when
    # Redis restarts empty): beat notices the feed went missing and rereads.
    crons.produce("add", missed, "missed", feed="off")
    redis.Redis.from_url(RESULT_BACKEND).delete(FEED_KEY)
    deadline = time.monotonic() + 10
    while not _labels(crons, missed):
        assert time.monotonic() < deadline, f"the unannounced cron never ran:\n{beat.log()}"
        time.sleep(0.1)
    assert "rereading every stored cron" in beat.log()


def test_two_beats_share_the_crons_with_no_tick_twice_and_one_takes_over(crons: Clock) -> None:
    job_id = f"shared-{crons.run}"
    crons.produce("add", job_id, "shared")
    crons.worker()
    beats = [crons.beat(), crons.beat()]  # each its own storage object on one database
    deadline = time.monotonic() + 20
    while len(_labels(crons, job_id)) < 3:
        assert time.monotonic() < deadline, "the cron never ran"
        time.sleep(0.1)
    holder = next(b for b in beats if "holds the lock" in b.log())
    standby = beats[1] if holder is beats[0] else beats[0]
    holder.stop(sig=9)
    killed_at = time.time()
    deadline = time.monotonic() + 15
    while not _labels(crons, job_id, after=killed_at):
        assert time.monotonic() < deadline, "the standby beat never took over"
        time.sleep(0.1)
    assert "holds the lock" in standby.log()
    time.sleep(2.0)
    planned = [r["exec_at"] for r in crons.runs("labelled") if r["job_id"] == job_id]
    assert len(planned) == len(set(planned)), "a tick ran twice"
