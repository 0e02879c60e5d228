"""When a cron fires next, with Jobify's semantics. Pure functions.

Jobify, in one process, plans a cron like this:

* first run: the next time after ``start_date`` or now (``start_date`` itself
  when given), passed through the misfire policy;
* after each run: the next time after that run's *planned* time (the
  ``offset``), so the schedule never drifts; a time already past runs at once;
* on restart, the stored next time passes through the misfire policy again:
  ALL runs every missed tick, SKIP none, ONCE one (planned for "now"),
  GRACE(td) those no older than ``td``;
* ``max_runs`` runs in all, ``max_failures`` consecutive failures.

Beat applies exactly these rules through Jobify's own misfire function; this
module holds the state and the arithmetic, with no I/O and no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from jobify_celery._jobify import INFINITE_RUNS, apply_misfire_policy

if TYPE_CHECKING:
    from datetime import datetime

    from jobify import Cron

    from jobify_celery._jobify import CronParser

__all__ = ("CronState", "Tick", "fire", "first_run", "record_outcome", "remember", "resume")

_MAX_PENDING: Final = 1000


@dataclass(frozen=True, slots=True)
class Tick:
    """One run to publish: its number (1-based) and planned time."""

    run: int
    planned: datetime


@dataclass(slots=True)
class CronState:
    """Where a cron stands.

    ``offset`` is the planned time of the last run (or the schedule's start),
    ``next_run_at`` the time of the next one; ``run_count`` counts fired runs,
    ``failures`` consecutive failed runs, ``pending`` the runs whose outcome
    is not known yet (run number, Celery task id), oldest first.
    """

    offset: datetime
    next_run_at: datetime
    run_count: int = 0
    failures: int = 0
    permanently_failed: bool = False
    pending: list[tuple[int, str]] | None = None

    def finished(self, cron: Cron) -> bool:
        """Tell whether the cron has used all its ``max_runs``."""
        return cron.max_runs != INFINITE_RUNS and self.run_count >= cron.max_runs

    def active(self, cron: Cron) -> bool:
        """Tell whether the cron may still fire."""
        return not self.permanently_failed and not self.finished(cron)


def first_run(cron: Cron, parser: CronParser, now: datetime) -> CronState:
    """Plan a cron scheduled now: start at ``start_date``, else after ``now``."""
    if cron.start_date is not None:
        offset = cron.start_date
        target = cron.start_date
    else:
        offset = now
        target = parser.next_run(now=now)
    state = CronState(offset=offset, next_run_at=target)
    return resume(state, cron, parser, now)


def resume(state: CronState, cron: Cron, parser: CronParser, now: datetime) -> CronState:
    """Apply the misfire policy to a cron found with its next time in the past."""
    next_run_at = apply_misfire_policy(
        parser=parser, next_run_at=state.next_run_at, now=now, policy=cron.misfire_policy
    )
    state.next_run_at = next_run_at
    return state


def next_tick(state: CronState) -> Tick:
    """Return the run ``fire`` will take next, leaving ``state`` as it is."""
    return Tick(run=state.run_count + 1, planned=state.next_run_at)


def fire(state: CronState, parser: CronParser) -> Tick:
    """Take the due run off the schedule and plan the one after it."""
    planned = state.next_run_at
    state.run_count += 1
    state.offset = planned
    state.next_run_at = parser.next_run(now=planned)
    return Tick(run=state.run_count, planned=planned)


def record_outcome(state: CronState, cron: Cron, *, succeeded: bool) -> bool:
    """Count a finished run; tell whether the cron just failed permanently.

    Outcomes must be given in run order: a success resets the count of
    consecutive failures, ``max_failures`` of them stop the cron.
    """
    if succeeded:
        state.failures = 0
        return False
    state.failures += 1
    if state.failures >= cron.max_failures and not state.permanently_failed:
        state.permanently_failed = True
        return True
    return False


def remember(state: CronState, run: int, task_id: str) -> None:
    """Keep a fired run's task id until its outcome is read."""
    if state.pending is None:
        state.pending = []
    state.pending.append((run, task_id))
    if len(state.pending) > _MAX_PENDING:
        del state.pending[: len(state.pending) - _MAX_PENDING]
