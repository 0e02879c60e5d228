"""Runs of a coming burst built ahead: only bursts, in slices, never a stale one."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobify import Cron

from jobify_celery import _cron_prepare
from jobify_celery._cron_book import CronBook, Entry
from jobify_celery._cron_plan import CronState, Tick, fire
from jobify_celery._cron_prepare import Preparer, take_prepared

if TYPE_CHECKING:
    import pytest

    from jobify_celery._capture import Outgoing


class _EverySecond:
    def next_run(self, *, now: datetime) -> datetime:
        return now + timedelta(seconds=1)


def entry(job_id: str, due: datetime) -> Entry:
    return Entry(
        job_id=job_id,
        route="r",
        cron=Cron("* * * * * * *"),
        parser=_EverySecond(),
        digest=job_id,
        arguments={},
        state=CronState(offset=due - timedelta(seconds=1), next_run_at=due),
    )


class Builds:
    """A build function that records what it built (stands for Celery's capture)."""

    def __init__(self, cost: float = 0.0) -> None:
        self.built: list[tuple[str, int, datetime]] = []
        self.cost = cost

    def __call__(self, entry: Entry, tick: Tick, task_id: str) -> list[Outgoing]:
        del task_id
        if self.cost:
            time.sleep(self.cost)
        self.built.append((entry.job_id, tick.run, tick.planned))
        return [f"message of {entry.job_id} run {tick.run}"]  # type: ignore[list-item]


def book_of(count: int, due: datetime) -> CronBook:
    book = CronBook()
    for index in range(count):
        book.put(entry(f"c{index}", due))
    return book


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=1)


def drain(preparer: Preparer) -> None:
    preparer.work()
    while preparer.busy:
        preparer.work()


def test_a_burst_due_soon_is_built_ahead_and_used_when_due() -> None:
    due = soon()
    book = book_of(250, due)
    builds = Builds()
    drain(Preparer(book, builds))
    assert len(builds.built) == 250
    target = book.get("c7")
    assert target is not None
    tick = fire(target.state, target.parser)
    prepared = take_prepared(target, tick)
    assert prepared is not None
    assert (prepared.job_id, prepared.run, prepared.planned) == ("c7", 1, due)
    assert list(map(str, prepared.messages)) == ["message of c7 run 1"]
    assert target.prepared is None  # used once


def test_a_few_runs_are_built_when_due_as_celery_beat_does() -> None:
    builds = Builds()
    drain(Preparer(book_of(10, soon()), builds))
    assert builds.built == []


def test_runs_due_later_than_the_window_wait() -> None:
    builds = Builds()
    drain(Preparer(book_of(250, datetime.now(UTC) + timedelta(seconds=30)), builds))
    assert builds.built == []


def test_building_goes_in_slices_so_a_due_cron_is_not_held_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cron_prepare, "_SLICE", 0.01)
    builds = Builds(cost=0.001)
    preparer = Preparer(book_of(250, soon()), builds)
    started = time.monotonic()
    preparer.work()
    assert time.monotonic() - started < 0.05
    assert 0 < len(builds.built) < 250
    assert preparer.busy
    drain(preparer)
    assert len(builds.built) == 250


def test_a_replaced_or_fired_cron_is_not_built_from_its_old_entry() -> None:
    due = soon()
    book = book_of(250, due)
    builds = Builds()
    preparer = Preparer(book, builds)
    book.put(entry("c0", due + timedelta(seconds=1)))  # replaced before building
    old = book.get("c1")
    assert old is not None
    fire(old.state, old.parser)
    book.reschedule(old)  # fired: its next run is another one
    drain(preparer)
    built = {job_id: (run, planned) for job_id, run, planned in builds.built}
    assert built["c0"] == (1, due + timedelta(seconds=1))
    assert built["c1"] == (2, due + timedelta(seconds=1))
    assert len(builds.built) == 250


def test_a_prepared_run_for_another_tick_is_not_used() -> None:
    due = soon()
    book = book_of(250, due)
    drain(Preparer(book, Builds()))
    target = book.get("c3")
    assert target is not None
    other = Tick(run=1, planned=due + timedelta(seconds=5))
    assert take_prepared(target, other) is None
    assert target.prepared is None


def test_clearing_forgets_what_was_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cron_prepare, "_SLICE", 0.0)
    builds: Any = Builds()
    preparer = Preparer(book_of(250, soon()), builds)
    preparer.work()
    assert preparer.busy
    preparer.clear()
    assert not preparer.busy
