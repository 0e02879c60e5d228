"""The engine behind ``JobifyScheduler``: Jobify crons fired from Celery beat.

Where crons come from:

* declared in code (``@app.task(cron=...)``, in routers too): at start the
  beat writes each one to the app's Jobify storage under Jobify's id for it
  (``<route>__jobify_cron_definition``), replacing a stored one whose
  ``Cron`` changed (the code wins) and deleting those no longer declared;
* added while everything runs (``schedule(...).cron(expr, job_id=...)`` in
  any producer): the producer writes it to the storage in Jobify's format.

The storage thus holds one *definition* record per cron, written by
producers (or, for declared crons, the beat). Beat keeps its own progress in
a *state* record per cron (``<job_id>::jobify-celery-beat``: offset, runs,
consecutive failures), so a producer's replace or cancel never races with a
beat's bookkeeping; a definition that changed resets its state.

Beat reads every record when it starts firing, and then follows changes:
producers announce each cron they add, replace or cancel on the cron feed
(``_cron_feed``), and beat reads those records only (``_cron_store``). It
reads every record again at a rare interval (``full_reload_every``), and at
once when the feed cannot be trusted; with a storage or a backend that
offers neither, it reads every record every half second, as before. The
crons wait in a heap by next run time (``_cron_book``): a tick costs the
crons due, not the crons stored.

Each run is a normal Celery task (its own task id) whose ``jobify`` header
names the cron's job id, the run number and the planned time; the worker
gives it ``ctx.job.id`` = the cron's job id and ``exec_at`` = that time. The
states of a tick's crons are written, in one call, before their runs are
published: a beat that dies in between loses those runs rather than letting
a standby fire them twice. While the storage is unreachable beat keeps firing
the crons it knows and writes their states once it is back.

Reading every record runs on the loop, taken in a slice per tick
(``_cron_reload``), so crons keep firing on time meanwhile. A tick's runs go
out through ``_cron_publish`` (Celery builds each message,
the bridge's sender sends them in planned order, runs the broker cannot take
yet wait); when many fall due together, ``_cron_prepare`` builds them in the
seconds before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from jobify import Cron, JobStatus

from jobify_celery._codec import HEADER_KEY, CronTick, encode_call, encode_header
from jobify_celery._cron_book import CronBook, Entry
from jobify_celery._cron_feed import START, FeedPosition, feed_for
from jobify_celery._cron_plan import (
    CronState,
    Tick,
    fire,
    first_run,
    record_outcome,
    remember,
    resume,
)
from jobify_celery._cron_prepare import Preparer, take_prepared
from jobify_celery._cron_publish import CronRun, RunPublisher, log_lost
from jobify_celery._cron_reload import FullRead
from jobify_celery._jobify import (
    DECLARED_CRON_SUFFIX,
    ScheduledJob,
    cron_record,
    func_spec_of,
    read_cron_record,
    route_by_name,
    routes_of,
)
from jobify_celery._outcome import read_meta
from jobify_celery._results import read_metas

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence
    from concurrent.futures import Future

    from celery import Celery
    from jobify import Jobify

    from jobify_celery._beat_lock import BeatLock
    from jobify_celery._beat_storage import ReadyStorage
    from jobify_celery._capture import Outgoing
    from jobify_celery._codec import ValueCodec
    from jobify_celery._cron_feed import CronFeed
    from jobify_celery._jobify import CronParser
    from jobify_celery._senders import Sender

__all__ = ("STATE_SUFFIX", "BeatEngine")

T = TypeVar("T")

logger = logging.getLogger("jobify_celery.beat")

#: Suffix of the storage records in which beat keeps each cron's progress.
STATE_SUFFIX: Final = "::jobify-celery-beat"
#: Without a feed (or a storage beat can read by id): reread everything this often.
_RELOAD_EVERY: Final = 0.5
#: With a feed: reread everything this often anyway (missed announcements).
_FULL_RELOAD_EVERY: Final = 300.0
#: How often beat looks whether the read of every record is done.
_READ_POLL: Final = 0.05
#: How often beat looks at the feed and at the outcomes of runs.
_FOLLOW_EVERY: Final = 0.5
#: After a failed storage call, the next one waits this long (beat fires meanwhile).
_STORAGE_RETRY: Final = 5.0
#: A storage call that takes longer has failed (a stalled connection, say).
_STORAGE_TIMEOUT: Final = 3.0
_LOCK_RETRY: Final = 0.5
#: Runs of one cron published in one tick at most (a long-missed cron, ALL).
_MAX_FIRES_PER_CRON: Final = 1000
#: Crons fired in one tick at most; the rest go in the next tick, at once.
_MAX_CRONS_PER_TICK: Final = 20_000


class BeatEngine:
    """Loads crons from storage, fires the due ones, tracks their outcomes."""

    def __init__(  # noqa: PLR0913
        self,
        *,
        app: Jobify,
        celery_app: Celery,
        codec: ValueCodec,
        run: Callable[[Awaitable[Any]], Any],
        submit: Callable[[Awaitable[Any]], Future[Any]],
        lock: BeatLock,
        storage: ReadyStorage,
        sender: Sender,
        confirms: bool = False,
        reload_every: float = _RELOAD_EVERY,
        full_reload_every: float = _FULL_RELOAD_EVERY,
    ) -> None:
        self._app = app
        self._celery_app = celery_app
        self._codec = codec
        self._run = run
        self._lock = lock
        self._publisher = RunPublisher(celery_app, sender, confirms=confirms, run=run)
        self._book = CronBook()
        self._preparer = Preparer(self._book, self._messages)
        self._reload = FullRead(submit)
        self._read_count = 0
        self._holding = False
        self._storage = storage
        self._feed: CronFeed | None = feed_for(celery_app) if storage.has_store else None
        self._position: FeedPosition = START
        self._full_every = full_reload_every if self._feed is not None else reload_every
        self._next_full = 0.0
        self._next_follow = 0.0
        self._next_outcomes = 0.0
        self._storage_down = False
        self._next_storage_try = 0.0
        #: Crons whose state could not be written yet (the storage was unreachable).
        self._unsaved: set[str] = set()
        #: Records that could not be read, by job id, with their digest: logged once.
        self._skipped: dict[str, str] = {}
        self._parsers: dict[str, CronParser] = {}

    @property
    def crons(self) -> dict[str, str]:
        """The crons this beat fires: job id to expression."""
        return {entry.job_id: entry.cron.expression for entry in self._book}

    def tick(self) -> float:
        """Fire what is due; return how long the beat may sleep."""
        if self._publisher.retry_due:
            # Even without the lock: these runs were fired by this beat.
            self._publisher.publish(())
        if not self._lock.hold():
            if self._holding:
                logger.warning("Lost the beat lock; another beat fires the crons now")
            self._holding = False
            self._book.clear()
            self._preparer.clear()
            self._reload.forget()
            return _LOCK_RETRY
        if not self._holding:
            logger.info("This beat holds the lock: it fires the Jobify crons")
            self._holding = True
            self._book.clear()
            self._preparer.clear()
            self._reload.forget()
            self._next_full = 0.0
        now = time.monotonic()
        if now >= self._next_full:
            self._full_reload(declared=not self._book)
        if now >= self._next_follow:
            self._follow_feed()
        self._continue_full_reload()
        self._fire_due()
        if time.monotonic() >= self._next_outcomes:
            self._next_outcomes = time.monotonic() + _FOLLOW_EVERY
            self._save_unsaved()
            try:
                self._read_outcomes()
            except Exception:  # a backend blip must not stop beat
                logger.warning("Cannot read the outcomes of cron runs; trying again", exc_info=True)
        self._preparer.work()
        return self._sleep_for()

    def close(self) -> None:
        """Give the lock up; close the connection runs are published on."""
        self._lock.release()
        self._holding = False
        self._publisher.close()

    # -- storage ------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.now(tz=self._app.configs.tz)

    def _full_reload(self, *, declared: bool) -> None:
        """Start reading every record: at start, now and then, and when the feed was lost.

        The read runs on the loop (``_cron_reload``); ``_continue_full_reload``
        takes its records in over the next ticks while beat keeps firing.
        """
        if self._reload.reading or (
            self._storage_down and time.monotonic() < self._next_storage_try
        ):
            return
        try:
            # The feed's position first: what changes during the read is read again.
            position = self._feed.position() if self._feed is not None else START
        except Exception as exc:  # noqa: BLE001 - Redis is back soon, or the lock goes
            logger.warning("Cannot read the cron feed (%s: %s)", type(exc).__name__, exc)
            position = START
        self._position = position
        self._next_full = time.monotonic() + self._full_every
        self._reload.start(self._storage.get_schedules, position, declared=declared)

    def _continue_full_reload(self) -> None:
        """Take in the records of the read under way, a slice per tick, once read."""
        reload = self._reload
        if not reload.active:
            return
        if reload.reading:
            outcome = reload.outcome()
            if outcome is None:
                return
            if isinstance(outcome, BaseException):
                self._storage_failed("read the stored crons", outcome)
                self._next_storage_try = time.monotonic() + _STORAGE_RETRY
                self._next_full = time.monotonic() + _STORAGE_RETRY
                return
            self._storage_back()
            self._next_full = time.monotonic() + self._full_every
            records = self._sync_declared(outcome) if reload.declared else outcome
            definitions, states = _split(records)
            for job_id in self._book.job_ids() - set(definitions) - reload.touched:
                self._book.remove(job_id)
            orphans = [f"{job_id}{STATE_SUFFIX}" for job_id in states if job_id not in definitions]
            if orphans:
                self._delete([], extra=orphans)
            reload.take_in(
                (job_id, record, states.get(job_id)) for job_id, record in definitions.items()
            )
            self._read_count = len(definitions)
        for job_id, record, state in reload.slice():
            self._apply(job_id, record, state)
        if not reload.active:
            logger.info(
                "Read %d stored crons in %.2f s; firing %d", self._read_count,
                time.monotonic() - reload.started, len(self._book),
            )  # fmt: skip

    def _follow_feed(self) -> None:
        """Read the crons announced since the last look, and those only."""
        self._next_follow = time.monotonic() + _FOLLOW_EVERY
        feed = self._feed
        if feed is None:
            return
        try:
            reading = feed.read(self._position)
        except Exception as exc:  # noqa: BLE001 - a Redis blip: reread all once it is back
            logger.warning("Cannot read the cron feed (%s: %s)", type(exc).__name__, exc)
            self._next_full = time.monotonic() + _STORAGE_RETRY
            return
        if reading.lost:
            logger.info("Some cron changes may have been missed: rereading every stored cron")
            self._full_reload(declared=False)
            return
        if not reading.job_ids:
            self._position = reading.position
            return
        changed = sorted(set(reading.job_ids))
        wanted = [*changed, *(f"{job_id}{STATE_SUFFIX}" for job_id in changed)]
        read, found = self._storage_call(
            lambda: self._storage.get_many(wanted), "read the changed crons"
        )
        if not read or found is None:
            return  # the position stays: they are read again
        records = found
        self._position = reading.position
        definitions, states = _split(records)
        for job_id in changed:
            self._reload.touch(job_id)
            record = definitions.get(job_id)
            if record is None:
                self._book.remove(job_id)
                self._skipped.pop(job_id, None)
            else:
                self._apply(job_id, record, states.get(job_id))
        if reading.more:
            self._next_follow = 0.0

    def _apply(self, job_id: str, record: ScheduledJob, state: ScheduledJob | None) -> None:
        """Take a definition in: new or changed, it is loaded; unchanged, left alone."""
        digest = _digest(record)
        entry = self._book.get(job_id)
        if entry is not None and entry.digest == digest:
            return
        if self._skipped.get(job_id) == digest:
            return
        try:
            loaded = self._load(record, digest, state)
        except Exception as exc:  # noqa: BLE001 - bad data must not stop beat
            self._skipped[job_id] = digest
            self._book.remove(job_id)
            logger.warning(
                "Skipping stored schedule %r (%s): %s: %s",
                job_id,
                record.name,
                type(exc).__name__,
                exc,
            )
            return
        self._skipped.pop(job_id, None)
        self._book.put(loaded)

    def _sync_declared(self, records: Sequence[ScheduledJob]) -> Sequence[ScheduledJob]:
        """Write the crons declared in code; drop declared ones no longer there."""
        by_id = {r.job_id: r for r in records}
        declared: list[ScheduledJob] = []
        keep: set[str] = set()
        for route in routes_of(self._app):
            cron = route.options.get("cron")
            if cron is None:
                continue
            cron = Cron(cron) if isinstance(cron, str) else cron
            job_id = f"{route.name}{DECLARED_CRON_SUFFIX}"
            keep.add(job_id)
            stored = by_id.get(job_id)
            if stored is not None and self._same_cron(stored, cron):
                continue
            declared.append(self._declared_record(route, job_id, cron))
        stale = [
            job_id
            for job_id in by_id
            if job_id.endswith(DECLARED_CRON_SUFFIX) and job_id not in keep
        ]
        if declared:
            self._storage_call(
                lambda: self._storage.add_schedule(*declared), "write the declared crons"
            )
        if stale:
            logger.info("Removing crons no longer declared: %s", stale)
            self._delete(stale)
        for record in declared:
            by_id[record.job_id] = record
        for job_id in stale:
            by_id.pop(job_id, None)
            by_id.pop(f"{job_id}{STATE_SUFFIX}", None)
        return list(by_id.values())

    def _same_cron(self, record: ScheduledJob, cron: Cron) -> bool:
        try:
            return read_cron_record(self._app, record).cron == cron
        except Exception:  # noqa: BLE001 - unreadable: rewrite it from the code
            return False

    def _declared_record(self, route: Any, job_id: str, cron: Cron) -> ScheduledJob:  # noqa: ANN401
        spec = func_spec_of(route)
        bound = spec.signature.bind(*cron.args, **cron.kwargs)
        dump = self._app.configs.dumper.dump
        arguments = {
            name: dump(value, spec.type_params.get(name, Any))
            for name, value in bound.arguments.items()
        }
        parser = self._parser(cron.expression)
        start = first_run(cron, parser, self._now())
        return cron_record(
            self._app,
            job_id=job_id,
            name=route.name,
            arguments=arguments,
            cron=cron,
            offset=start.offset,
            next_run_at=start.next_run_at,
        )

    def _load(self, record: ScheduledJob, digest: str, state_record: ScheduledJob | None) -> Entry:
        stored = read_cron_record(self._app, record)
        # The record's route name is the one Jobify goes by, as in its restore.
        route = route_by_name(self._app, record.name)
        if route is None or stored.name != record.name:
            msg = f"no route named {record.name!r} here"
            raise LookupError(msg)
        parser = self._parser(stored.cron.expression)
        state = _state_from(state_record, digest)
        if state is None:
            state = CronState(
                offset=stored.offset, next_run_at=record.next_run_at, run_count=stored.run_count
            )
        resume(state, stored.cron, parser, self._now())
        entry = Entry(
            job_id=stored.job_id,
            route=stored.name,
            cron=stored.cron,
            parser=parser,
            digest=digest,
            arguments=stored.arguments,
            state=state,
        )
        if not state.active(stored.cron):
            return entry
        # Arguments that do not load are found now, not at the first run.
        entry.call = self._encode(entry)
        return entry

    def _encode(self, entry: Entry) -> tuple[list[Any], dict[str, Any]]:
        route = route_by_name(self._app, entry.route)
        if route is None:
            msg = f"no route named {entry.route!r} here"
            raise LookupError(msg)
        spec = func_spec_of(route)
        loader = self._app.configs.loader
        typed = {
            name: loader.load(value, spec.type_params.get(name, Any))
            for name, value in entry.arguments.items()
        }
        bound = spec.signature.bind(**typed)
        return encode_call(entry.route, bound, spec.type_params, self._codec, spec.inject_params)

    def _parser(self, expression: str) -> CronParser:
        """One parser per expression: a hundred thousand crons share a few."""
        parser = self._parsers.get(expression)
        if parser is None:
            parser = self._parsers[expression] = self._app.configs.cron_factory(expression)
        return parser

    def _save(self, entries: Iterable[Entry]) -> bool:
        """Write the states of ``entries`` in one call; tell whether it worked."""
        records = [_state_record(entry) for entry in entries]
        if not records:
            return True
        saved, _ = self._storage_call(
            lambda: self._storage.add_schedule(*records), "write the crons' progress"
        )
        if not saved:
            # Kept in memory, written once the storage answers again.
            self._unsaved.update(record.job_id.removesuffix(STATE_SUFFIX) for record in records)
        return saved

    def _save_unsaved(self) -> None:
        if not self._unsaved:
            return
        entries = [e for job_id in self._unsaved if (e := self._book.get(job_id)) is not None]
        self._unsaved.clear()
        self._save(entries)

    def _delete(self, job_ids: list[str], extra: list[str] | None = None) -> None:
        ids = [*job_ids, *(f"{j}{STATE_SUFFIX}" for j in job_ids), *(extra or [])]
        if ids:
            self._storage_call(
                lambda: self._storage.delete_schedule_many(ids), "delete finished crons"
            )

    def _storage_call(self, make: Callable[[], Awaitable[T]], what: str) -> tuple[bool, T | None]:
        """Run one storage call, bounded; ``(False, None)`` when it failed or was not tried.

        After a failure, calls are not tried again for ``_STORAGE_RETRY``
        seconds: beat fires from memory meanwhile instead of waiting on each.
        """
        if self._storage_down and time.monotonic() < self._next_storage_try:
            return False, None
        try:
            result: T = self._run(asyncio.wait_for(make(), _STORAGE_TIMEOUT))
        except Exception as exc:  # noqa: BLE001 - beat goes on with what it knows
            self._storage_failed(what, exc)
            self._next_storage_try = time.monotonic() + _STORAGE_RETRY
            return False, None
        self._storage_back()
        return True, result

    def _storage_failed(self, what: str, exc: BaseException) -> None:
        if not self._storage_down:
            logger.error(
                "Cannot %s: the Jobify storage is unreachable (%s: %s). Beat keeps firing "
                "the %d crons it knows and catches up once the storage answers.",
                what,
                type(exc).__name__,
                exc,
                len(self._book),
            )
        self._storage_down = True

    def _storage_back(self) -> None:
        if self._storage_down:
            logger.info("The Jobify storage answers again: rereading every stored cron")
            self._storage_down = False
            self._next_full = 0.0  # what changed meanwhile, and the states to write

    # -- firing ---------------------------------------------------------------

    def _fire_due(self) -> None:
        now = self._now()
        due = self._book.due(now, _MAX_CRONS_PER_TICK)
        if not due:
            return
        # Each run fired: its message built ahead (prepared), or what to build it from.
        fired: list[tuple[Entry, Tick, str, CronRun | None]] = []
        for entry in due:
            state = entry.state
            ticks: list[Tick] = []
            while (
                state.active(entry.cron)
                and state.next_run_at <= now
                and len(ticks) < _MAX_FIRES_PER_CRON
            ):
                ticks.append(fire(state, entry.parser))
            for tick in ticks:
                prepared = take_prepared(entry, tick)
                task_id = uuid.uuid4().hex if prepared is None else prepared.task_id
                remember(state, tick.run, task_id)
                fired.append((entry, tick, task_id, prepared))
            self._book.reschedule(entry)
            self._book.mark_pending(entry)
        # Written before publishing, in one call: a standby taking over never re-fires.
        self._save(due)
        runs = [
            prepared if prepared is not None else self._build_run(entry, tick, task_id)
            for entry, tick, task_id, prepared in fired
        ]
        self._publisher.publish(sorted((run for run in runs if run is not None), key=_planned))
        finished = [entry.job_id for entry in due if entry.state.finished(entry.cron)]
        if finished:
            logger.info("%d cron(s) reached their max_runs: %s", len(finished), _few(finished))
        ended: list[str] = []
        for job_id in finished:
            if not job_id.endswith(DECLARED_CRON_SUFFIX):
                # A run-time cron ends as in Jobify: its schedule goes away.
                # A declared one keeps its records, so that a beat restart
                # does not start its runs over.
                self._book.remove(job_id)
                ended.append(job_id)
        self._delete(ended)

    def _build_run(self, entry: Entry, tick: Tick, task_id: str) -> CronRun | None:
        """Build the messages of a run not prepared ahead (None if that fails, logged)."""
        try:
            messages = self._messages(entry, tick, task_id)
        except Exception:  # noqa: BLE001 - as Celery's beat does: log, go on
            log_lost(entry.job_id, tick.run, tick.planned)
            return None
        return CronRun(entry.job_id, tick.run, tick.planned, task_id, messages)

    def _messages(self, entry: Entry, tick: Tick, task_id: str) -> list[Outgoing]:
        header = encode_header(
            exec_at=tick.planned,
            request_state={},
            codec=self._codec,
            cron=CronTick(job_id=entry.job_id, run=tick.run, expression=entry.cron.expression),
        )
        if entry.call is None:
            entry.call = self._encode(entry)
        args, kwargs = entry.call
        task = self._celery_app.tasks[entry.route]
        # Beat reads the runs' outcomes itself (_read_outcomes): the capture
        # leaves out the result subscription Celery makes for an AsyncResult.
        return self._publisher.messages(task, args, kwargs, task_id, {HEADER_KEY: header})

    def _read_outcomes(self) -> None:
        """Count finished runs in order, for ``max_failures``."""
        waiting = self._book.pending()
        pending_ids = [task_id for entry in waiting for _, task_id in (entry.state.pending or ())]
        if not pending_ids:
            return
        metas = dict(read_metas(self._celery_app.backend, pending_ids))
        changed: list[Entry] = []
        for entry in waiting:
            state = entry.state
            counted = False
            while state.pending:
                _, task_id = state.pending[0]
                outcome = read_meta(metas.get(task_id))
                if not outcome.done:
                    break
                state.pending.pop(0)
                if outcome.status is JobStatus.CANCELLED:
                    continue
                counted = True
                if record_outcome(state, entry.cron, succeeded=outcome.status is JobStatus.SUCCESS):
                    logger.warning(
                        "Cron %r stopped after %d consecutive failed runs (max_failures)",
                        entry.job_id,
                        state.failures,
                    )
            if counted:
                changed.append(entry)
        if changed:
            self._save(changed)

    def _sleep_for(self) -> float:
        reload = self._reload
        if self._preparer.busy or (reload.active and not reload.reading):
            return 0.0
        until_follow = min(self._next_follow, self._next_outcomes) - time.monotonic()
        waits = [_LOCK_RETRY, max(0.0, until_follow)]
        if reload.reading:
            waits.append(_READ_POLL)
        soonest = self._book.next_due()
        if soonest is not None:
            waits.append(soonest - time.time())
        return max(0.0, min(waits))


def _planned(run: CronRun) -> datetime:
    return run.planned


def _few(job_ids: Sequence[str], shown: int = 5) -> str:
    """Name the first few of ``job_ids`` (a log line for ten thousand crons stays short)."""
    named = ", ".join(repr(job_id) for job_id in job_ids[:shown])
    return named if len(job_ids) <= shown else f"{named} and {len(job_ids) - shown} more"


def _split(
    records: Iterable[ScheduledJob],
) -> tuple[dict[str, ScheduledJob], dict[str, ScheduledJob]]:
    """Sort records into definitions and beat's states, both by the cron's job id."""
    definitions: dict[str, ScheduledJob] = {}
    states: dict[str, ScheduledJob] = {}
    for record in records:
        if record.job_id.endswith(STATE_SUFFIX):
            states[record.job_id.removesuffix(STATE_SUFFIX)] = record
        else:
            definitions[record.job_id] = record
    return definitions, states


def _digest(record: ScheduledJob) -> str:
    return hashlib.sha256(record.name.encode() + b"\0" + bytes(record.message)).hexdigest()


def _state_record(entry: Entry) -> ScheduledJob:
    state = entry.state
    payload = {
        "v": 1,
        "definition": entry.digest,
        "offset": state.offset.isoformat(),
        "next_run_at": state.next_run_at.isoformat(),
        "run_count": state.run_count,
        "failures": state.failures,
        "permanently_failed": state.permanently_failed,
    }
    return ScheduledJob(
        job_id=f"{entry.job_id}{STATE_SUFFIX}",
        name=entry.route,
        message=json.dumps(payload).encode(),
        status=JobStatus.PERMANENTLY_FAILED if state.permanently_failed else JobStatus.SCHEDULED,
        next_run_at=state.next_run_at,
    )


def _state_from(record: ScheduledJob | None, digest: str) -> CronState | None:
    """Read beat's state record, if it belongs to this very definition."""
    if record is None:
        return None
    try:
        payload = json.loads(bytes(record.message))
        if payload.get("definition") != digest:
            return None
        return CronState(
            offset=datetime.fromisoformat(payload["offset"]),
            next_run_at=datetime.fromisoformat(payload["next_run_at"]),
            run_count=int(payload["run_count"]),
            failures=int(payload["failures"]),
            permanently_failed=bool(payload["permanently_failed"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
