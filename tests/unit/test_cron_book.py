"""The heap of crons beat fires: due ones in order, stale items skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobify import Cron

from jobify_celery._cron_book import CronBook, Entry
from jobify_celery._cron_plan import CronState

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def entry(job_id: str, seconds: float, *, max_runs: int | None = None) -> Entry:
    cron = Cron("* * * * * * *", max_runs=max_runs) if max_runs else Cron("* * * * * * *")
    return Entry(
        job_id=job_id,
        route="r",
        cron=cron,
        parser=None,  # type: ignore[arg-type]
        digest=job_id,
        arguments={},
        state=CronState(offset=T0, next_run_at=T0 + timedelta(seconds=seconds)),
    )


def test_due_entries_come_soonest_first_and_leave_the_heap() -> None:
    book = CronBook()
    for job_id, seconds in [("c", 3), ("a", 1), ("b", 2), ("later", 60)]:
        book.put(entry(job_id, seconds))
    due = book.due(T0 + timedelta(seconds=5), limit=10)
    assert [e.job_id for e in due] == ["a", "b", "c"]
    assert book.due(T0 + timedelta(seconds=5), limit=10) == []
    assert book.next_due() == (T0 + timedelta(seconds=60)).timestamp()


def test_a_limit_leaves_the_rest_for_the_next_call() -> None:
    book = CronBook()
    for index in range(5):
        book.put(entry(f"j{index}", index))
    assert len(book.due(T0 + timedelta(seconds=10), limit=3)) == 3
    assert [e.job_id for e in book.due(T0 + timedelta(seconds=10), limit=3)] == ["j3", "j4"]


def test_replaced_and_removed_entries_leave_no_live_item() -> None:
    book = CronBook()
    book.put(entry("x", 1))
    book.put(entry("x", 30))  # replaced: its old time is stale
    book.put(entry("gone", 2))
    book.remove("gone")
    assert book.due(T0 + timedelta(seconds=10), limit=10) == []
    assert book.next_due() == (T0 + timedelta(seconds=30)).timestamp()
    assert len(book) == 1


def test_a_rescheduled_entry_is_due_again_at_its_new_time() -> None:
    book = CronBook()
    first = entry("x", 1)
    book.put(first)
    [taken] = book.due(T0 + timedelta(seconds=1), limit=10)
    taken.state.next_run_at = T0 + timedelta(seconds=2)
    book.reschedule(taken)
    assert book.due(T0 + timedelta(seconds=1), limit=10) == []
    assert book.due(T0 + timedelta(seconds=2), limit=10) == [taken]


def test_an_inactive_entry_is_not_filed() -> None:
    book = CronBook()
    done = entry("done", 1, max_runs=1)
    done.state.run_count = 1
    book.put(done)
    assert book.next_due() is None
    assert "done" in book


def test_pending_entries_are_listed_until_their_runs_are_counted() -> None:
    book = CronBook()
    waiting = entry("w", 1)
    book.put(waiting)
    waiting.state.pending = [(1, "task-1")]
    book.mark_pending(waiting)
    assert book.pending() == [waiting]
    waiting.state.pending.clear()
    assert book.pending() == []


def test_upcoming_finds_the_entries_due_by_a_time_soonest_first_and_takes_none() -> None:
    book = CronBook()
    for index in range(200):
        book.put(entry(f"far{index}", 3600 + index))
    for job_id, seconds in [("c", 3), ("a", 1), ("b", 2)]:
        book.put(entry(job_id, seconds))
    book.put(entry("a", 4))  # replaced: its item at 1 s is stale
    book.put(entry("gone", 2))
    book.remove("gone")
    until = (T0 + timedelta(seconds=10)).timestamp()
    assert [e.job_id for e in book.upcoming(until)] == ["b", "c", "a"]
    assert [e.job_id for e in book.upcoming(until)] == ["b", "c", "a"]  # nothing left
    assert CronBook().upcoming(until) == []
