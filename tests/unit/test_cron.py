"""Cron plans with Jobify's semantics, and the croniter factory. No server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jobify import Cron, MisfirePolicy
from jobify.crontab import create_crontab

from jobify_celery._cron_plan import CronState, fire, first_run, record_outcome, resume
from jobify_celery.cron import CroniterParser, croniter_factory

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
EVERY_SECOND = "* * * * * * *"


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_first_run_is_the_next_tick_or_the_start_date() -> None:
    parser = create_crontab(EVERY_SECOND)
    state = first_run(Cron(EVERY_SECOND), parser, T0 + seconds(0.4))
    assert state.next_run_at == T0 + seconds(1)
    start = T0 + seconds(30)
    later = first_run(Cron(EVERY_SECOND, start_date=start), parser, T0)
    assert later.next_run_at == start
    assert later.offset == start


def test_runs_follow_planned_times_without_drift() -> None:
    parser = create_crontab(EVERY_SECOND)
    state = CronState(offset=T0, next_run_at=T0 + seconds(1))
    ticks = [fire(state, parser) for _ in range(5)]
    assert [t.planned for t in ticks] == [T0 + seconds(i) for i in range(1, 6)]
    assert [t.run for t in ticks] == [1, 2, 3, 4, 5]
    assert state.next_run_at == T0 + seconds(6)


@pytest.mark.parametrize(
    ("policy", "expected_first"),
    [
        (MisfirePolicy.ALL, T0 + seconds(1)),
        (MisfirePolicy.SKIP, T0 + seconds(11)),
        (MisfirePolicy.ONCE, T0 + seconds(10.5)),
        (MisfirePolicy.GRACE(timedelta(seconds=3)), T0 + seconds(8)),
    ],
)
def test_misfire_policies_match_jobify(policy: object, expected_first: datetime) -> None:
    parser = create_crontab(EVERY_SECOND)
    cron = Cron(EVERY_SECOND, misfire_policy=policy)  # type: ignore[arg-type]
    now = T0 + seconds(10.5)
    state = resume(CronState(offset=T0, next_run_at=T0 + seconds(1)), cron, parser, now)
    assert state.next_run_at == expected_first
    missed = []
    while state.next_run_at <= now:
        missed.append(fire(state, parser).planned)
    expected_missed = {
        MisfirePolicy.ALL: 10,
        MisfirePolicy.SKIP: 0,
        MisfirePolicy.ONCE: 1,
    }.get(policy, 3)  # type: ignore[call-overload]
    assert len(missed) == expected_missed


def test_max_runs_and_max_failures() -> None:
    parser = create_crontab(EVERY_SECOND)
    cron = Cron(EVERY_SECOND, max_runs=2, max_failures=2)
    state = CronState(offset=T0, next_run_at=T0 + seconds(1))
    fire(state, parser)
    assert state.active(cron)
    fire(state, parser)
    assert state.finished(cron)
    assert not state.active(cron)
    assert record_outcome(state, cron, succeeded=False) is False
    assert record_outcome(state, cron, succeeded=True) is False
    assert state.failures == 0
    assert record_outcome(state, cron, succeeded=False) is False
    assert record_outcome(state, cron, succeeded=False) is True
    assert state.permanently_failed


def test_croniter_reads_six_fields_as_ending_in_seconds() -> None:
    now = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    every_two_seconds = croniter_factory("* * * * * */2")
    assert every_two_seconds.next_run(now=now) == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    # Jobify's own parser reads the same string as minute..year.
    assert create_crontab("* * * * * */2").next_run(now=now) == datetime(
        2026, 1, 1, 0, 1, tzinfo=UTC
    )
    last_day = croniter_factory("0 0 L * *").next_run(now=now)
    assert last_day == datetime(2026, 1, 31, tzinfo=UTC)
    hashed = CroniterParser("H * * * *").next_run(now=now)
    assert hashed == CroniterParser("H * * * *").next_run(now=now)
    with pytest.raises(ValueError, match="invalid croniter expression"):
        croniter_factory("not a cron")
