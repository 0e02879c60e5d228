"""Jobify crons fired by real `celery beat` processes, run by a real worker."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from jobify import Cron, JobStatus
from jobify.exceptions import DuplicateJobError

from tests.apps import clock

if TYPE_CHECKING:
    from tests.conftest import LoopThread
    from tests.integration.clock_env import Clock
    from tests.integration.workers import BeatProcess

pytestmark = pytest.mark.integration

EVERY_SECOND = "* * * * * * *"
DECLARED = "__jobify_cron_definition"


def _times(runs: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(r["exec_at"]) for r in runs]


def _whole(moment: datetime) -> bool:
    return moment.microsecond == 0


def test_a_seven_field_cron_fires_every_second_once(clock_env: Clock) -> None:
    clock_env.worker()
    clock_env.beat("tick")
    runs = clock_env.wait_runs("tick", 5)
    times = sorted(_times(runs))
    assert all(_whole(t) for t in times)
    assert len(set(times)) == len(times), "a tick ran twice"
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert steps == {1.0}, times
    assert {r["job_id"] for r in runs} == {f"tests.apps.clock:tick{DECLARED}"}
    assert len({r["task_id"] for r in runs}) == len(runs)
    assert all(r["is_cron"] for r in runs)
    numbers = sorted(r["run"] for r in runs)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_run_time_crons_are_added_replaced_and_cancelled_while_beat_runs(
    clock_env: Clock, loop_thread: LoopThread
) -> None:
    clock_env.db = clock.app.configs.storage.database.as_posix()  # type: ignore[attr-defined]
    clock_env.worker()
    clock_env.beat()
    job_id = f"runtime-{clock_env.run}"
    time.sleep(2.0)  # beat is up and reading the storage

    async def start() -> tuple[Any, float]:
        await clock.app.startup()
        added_at = time.time()
        job = await clock.labelled.schedule("first").cron(EVERY_SECOND, job_id=job_id)
        with pytest.raises(DuplicateJobError):
            await clock.labelled.schedule("again").cron(EVERY_SECOND, job_id=job_id)
        return job, added_at

    job, added_at = loop_thread.run(start())
    try:
        first = clock_env.wait_runs("labelled", 2, timeout=10)
        assert first[0]["label"] == "first"
        assert first[0]["job_id"] == job_id
        # Picked up within a reload (0.5 s) of the next second.
        assert datetime.fromisoformat(first[0]["exec_at"]).timestamp() - added_at < 2.5

        replaced_at = time.time()
        loop_thread.run(
            clock.labelled.schedule("second").cron(
                EVERY_SECOND, job_id=job_id, replace=True, force=True
            )
        )
        deadline = time.monotonic() + 10
        while not any(r["label"] == "second" for r in clock_env.runs("labelled")):
            assert time.monotonic() < deadline, "the replaced cron never ran"
            time.sleep(0.05)
        seconds = [r for r in clock_env.runs("labelled") if r["label"] == "second"]
        assert datetime.fromisoformat(seconds[0]["exec_at"]).timestamp() - replaced_at < 2.5

        loop_thread.run(job.cancel())
        assert job.status is JobStatus.CANCELLED
        cancelled_at = time.time()
        time.sleep(3.0)
        late = [
            r
            for r in clock_env.runs("labelled")
            if datetime.fromisoformat(r["exec_at"]).timestamp() > cancelled_at + 1.5
        ]
        assert late == [], "the cancelled cron kept firing"
    finally:
        loop_thread.run(clock.app.shutdown())


def test_a_burst_due_on_one_second_runs_each_cron_once_with_changes_made_just_before(
    clock_env: Clock, loop_thread: LoopThread
) -> None:
    # Enough crons on one second for beat to build their runs ahead (2 s before).
    clock_env.db = clock.app.configs.storage.database.as_posix()  # type: ignore[attr-defined]
    clock_env.worker()
    clock_env.beat()
    time.sleep(2.0)  # beat is up and reading the storage
    due = datetime.fromtimestamp(int(time.time()) + 7, UTC)
    once = Cron(EVERY_SECOND, start_date=due, max_runs=1)
    ids = [f"burst-{clock_env.run}-{index}" for index in range(300)]

    async def add() -> list[Any]:
        await clock.app.startup()
        return [await clock.labelled.schedule("burst").cron(once, job_id=i) for i in ids]

    jobs = loop_thread.run(add())
    try:
        # After beat built the runs, before they fall due: a replace and a cancel.
        time.sleep(max(0.0, due.timestamp() - 1.2 - time.time()))
        loop_thread.run(
            clock.labelled.schedule("changed").cron(once, job_id=ids[0], replace=True, force=True)
        )
        loop_thread.run(jobs[1].cancel())
        runs = clock_env.wait_runs("labelled", len(ids) - 1, timeout=30)
        time.sleep(2.0)  # nothing more comes
        runs = [r for r in clock_env.runs("labelled") if r["job_id"] in ids]
        by_id = {r["job_id"]: r for r in runs}
        assert len(runs) == len(by_id) == len(ids) - 1, "a cron ran twice, or one is missing"
        assert ids[1] not in by_id, "the cancelled cron ran"
        assert by_id[ids[0]]["label"] == "changed", "the run built before the replace was used"
        assert {r["label"] for r in runs if r["job_id"] != ids[0]} == {"burst"}
        # (The replaced one's first run is the one Jobify planned for the new definition.)
        assert {datetime.fromisoformat(r["exec_at"]) for r in runs if r["job_id"] != ids[0]} == {
            due
        }
        assert {r["run"] for r in runs} == {1}
        assert len({r["task_id"] for r in runs}) == len(runs)
    finally:
        loop_thread.run(clock.app.shutdown())


def _stop_down_restart(clock_env: Clock, crons: str, down: float) -> tuple[float, float]:
    first = clock_env.beat(crons)
    clock_env.wait_runs("misfire_all", 3)
    first.stop()
    stopped = time.time()
    time.sleep(down)
    restarted = time.time()
    clock_env.beat(crons)
    return stopped, restarted


def test_misfire_policies_after_beat_was_down(clock_env: Clock) -> None:
    clock_env.worker()
    stopped, restarted = _stop_down_restart(clock_env, "misfire", down=5.0)

    def since_stop(route: str) -> list[datetime]:
        return [t for t in _times(clock_env.runs(route)) if t.timestamp() > stopped]

    # ONCE makes up for the gap with one run planned when the new beat came
    # up (the only planned time that is not a whole second). The new beat may
    # take a few seconds to start on a busy machine: wait for that run.
    deadline = time.monotonic() + 20.0
    while not [t for t in since_stop("misfire_once") if not _whole(t)]:
        assert time.monotonic() < deadline, since_stop("misfire_once")
        time.sleep(0.1)
    time.sleep(1.5)  # the other policies' catch-up runs, published in the same pass
    once_late = [t for t in since_stop("misfire_once") if not _whole(t)]
    assert len(once_late) == 1, since_stop("misfire_once")
    came_up = once_late[0].timestamp()
    missed = [s for s in range(int(stopped) + 1, int(restarted)) if s + 1 < restarted]

    all_times = {t.timestamp() for t in _times(clock_env.runs("misfire_all"))}
    assert set(map(float, missed)) <= all_times, "ALL skipped a missed tick"
    skip_gap = [t for t in since_stop("misfire_skip") if t.timestamp() < restarted]
    assert skip_gap == [], "SKIP ran a missed tick"
    grace = [t.timestamp() for t in since_stop("misfire_grace") if t.timestamp() < came_up - 1]
    assert grace, "GRACE ran nothing of the last 2 s"
    assert min(grace) >= came_up - 3.5, "GRACE ran a tick older than its grace"
    assert len(grace) < len(missed)


def test_max_runs_hold_across_beat_restarts(clock_env: Clock) -> None:
    clock_env.worker()
    first = clock_env.beat("limited")
    clock_env.wait_runs("limited", 2)
    first.stop()
    clock_env.beat("limited")
    time.sleep(5.0)
    runs = clock_env.runs("limited")
    assert len(runs) == 3
    assert {r["label"] for r in runs} == {"limited"}
    assert sorted(r["run"] for r in runs) == [1, 2, 3]


def _state_status(db: str, job_id: str) -> str | None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT status FROM jobify_schedules WHERE job_id = ?",
            (f"{job_id}::jobify-celery-beat",),
        ).fetchone()
    return row[0] if row else None


def test_max_failures_stop_the_cron_permanently(clock_env: Clock) -> None:
    clock_env.worker()
    clock_env.beat("failing")
    clock_env.wait_runs("failing", 2)
    time.sleep(4.0)
    count = len(clock_env.runs("failing"))
    assert 2 <= count <= 3
    time.sleep(2.0)
    assert len(clock_env.runs("failing")) == count
    assert (
        _state_status(clock_env.db, f"tests.apps.clock:failing{DECLARED}") == "permanently_failed"
    )


def _holder(beats: list[BeatProcess]) -> BeatProcess:
    for beat in beats:
        if "holds the lock" in beat.log():
            return beat
    msg = "no beat took the lock"
    raise AssertionError(msg)


def test_two_beats_never_fire_a_tick_twice_and_one_takes_over(clock_env: Clock) -> None:
    clock_env.worker()
    beats = [clock_env.beat("tick"), clock_env.beat("tick")]
    clock_env.wait_runs("tick", 4)
    holder = _holder(beats)
    standby = beats[1] if holder is beats[0] else beats[0]
    holder.stop(sig=9)
    killed_at = time.time()
    deadline = time.monotonic() + 10
    while not any(t.timestamp() > killed_at for t in _times(clock_env.runs("tick"))):
        assert time.monotonic() < deadline, "the standby beat never took over"
        time.sleep(0.1)
    assert "holds the lock" in standby.log()
    time.sleep(2.0)
    times = _times(clock_env.runs("tick"))
    assert len(set(times)) == len(times), "a tick ran twice"
    resumed = min(t.timestamp() for t in times if t.timestamp() > killed_at)
    assert resumed - killed_at < 6.0


def test_a_declared_cron_changed_in_code_wins_after_restart(clock_env: Clock) -> None:
    clock_env.worker()
    first = clock_env.beat("tick")
    clock_env.wait_runs("tick", 2)
    first.stop()
    restarted = time.time()
    clock_env.beat("tick", CLOCK_TICK_EXPR="*/3 * * * * * *")
    time.sleep(7.0)
    later = [t for t in _times(clock_env.runs("tick")) if t.timestamp() > restarted + 0.5]
    assert later
    assert all(t.second % 3 == 0 for t in later), later


def test_broken_stored_schedules_are_skipped_and_beat_keeps_running(clock_env: Clock) -> None:
    clock_env.worker()
    seed = clock_env.beat("tick")
    clock_env.wait_runs("tick", 1)
    seed.stop()
    with contextlib.closing(sqlite3.connect(clock_env.db)) as conn, conn:
        row = conn.execute(
            "SELECT message, next_run_at FROM jobify_schedules WHERE job_id = ?",
            (f"tests.apps.clock:tick{DECLARED}",),
        ).fetchone()
        conn.execute(
            "INSERT INTO jobify_schedules (job_id, name, message, status, next_run_at) "
            "VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)",
            (
                "orphan", "tests.apps.clock:gone", row[0], "scheduled", row[1],
                "garbage", "tests.apps.clock:tick", b"not json", "scheduled", row[1],
            ),
        )  # fmt: skip
    beat = clock_env.beat("tick")
    before = len(clock_env.runs("tick"))
    clock_env.wait_runs("tick", before + 3)
    with contextlib.closing(sqlite3.connect(clock_env.db)) as conn:
        ids = {r[0] for r in conn.execute("SELECT job_id FROM jobify_schedules")}
    # Skipped, not deleted: a beat running older code must not delete crons
    # newer producers added for routes it does not know yet.
    assert {"orphan", "garbage"} <= ids
    log = beat.log()
    assert "Skipping stored schedule 'orphan'" in log
    assert "Skipping stored schedule 'garbage'" in log
    assert log.count("Skipping stored schedule 'orphan'") == 1  # once, not every reread


def test_croniter_factory_reads_seconds_last(clock_env: Clock) -> None:
    clock_env.worker()
    clock_env.beat("croniter", CLOCK_FACTORY="croniter")
    times = sorted(_times(clock_env.wait_runs("every_two", 3)))
    assert all(t.second % 2 == 0 for t in times)
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert steps == {2.0}
