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
beat's bookkeeping; a definition that changed resets its state. Beat re-reads
the storage every ``reload_every`` seconds (0.5 s), so a cron added, replaced
or cancelled anywhere is followed within a second.

Each run is a normal Celery task (its own task id) whose ``jobify`` header
names the cron's job id, the run number and the planned time; the worker
gives it ``ctx.job.id`` = the cron's job id and ``exec_at`` = that time. The
state is written before the run is published: a beat that dies in between
loses that run rather than letting a standby fire it twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from jobify import Cron, JobStatus

from jobify_celery._codec import HEADER_KEY, CronTick, encode_call, encode_header
from jobify_celery._cron_plan import (
    CronState,
    Tick,
    fire,
    first_run,
    record_outcome,
    remember,
    resume,
)
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
from jobify_celery._send import send_followed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from celery import Celery
    from jobify import Jobify
    from jobify.storage import Storage

    from jobify_celery._beat_lock import BeatLock
    from jobify_celery._codec import ValueCodec
    from jobify_celery._jobify import CronParser

__all__ = ("STATE_SUFFIX", "BeatEngine")

logger = logging.getLogger("jobify_celery.beat")

#: Suffix of the storage records in which beat keeps each cron's progress.
STATE_SUFFIX: Final = "::jobify-celery-beat"
_RELOAD_EVERY: Final = 0.5
_LOCK_RETRY: Final = 0.5
_MAX_FIRES_PER_TICK: Final = 1000


@dataclass(slots=True)
class _Entry:
    """A cron the beat fires: its definition, how to publish it, its state."""

    job_id: str
    route: str
    cron: Cron
    parser: CronParser
    digest: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: CronState


class BeatEngine:
    """Loads crons from storage, fires the due ones, tracks their outcomes."""

    def __init__(  # noqa: PLR0913
        self,
        *,
        app: Jobify,
        celery_app: Celery,
        codec: ValueCodec,
        run: Callable[[Awaitable[Any]], Any],
        lock: BeatLock,
        reload_every: float = _RELOAD_EVERY,
    ) -> None:
        self._app = app
        self._celery_app = celery_app
        self._codec = codec
        self._run = run
        self._lock = lock
        self._reload_every = reload_every
        self._entries: dict[str, _Entry] = {}
        self._holding = False
        self._next_reload = 0.0

    @property
    def crons(self) -> dict[str, str]:
        """The crons this beat fires: job id to expression."""
        return {job_id: e.cron.expression for job_id, e in self._entries.items()}

    def tick(self) -> float:
        """Fire what is due; return how long the beat may sleep."""
        if not self._lock.hold():
            if self._holding:
                logger.warning("Lost the beat lock; another beat fires the crons now")
            self._holding = False
            self._entries.clear()
            return _LOCK_RETRY
        if not self._holding:
            logger.info("This beat holds the lock: it fires the Jobify crons")
            self._holding = True
            self._entries.clear()
            self._sync_declared()
            self._reload()
        self._fire_due()
        if time.monotonic() >= self._next_reload:
            self._reload()
            try:
                self._read_outcomes()
            except Exception:  # a backend blip must not stop beat
                logger.warning("Cannot read the outcomes of cron runs; trying again", exc_info=True)
            self._next_reload = time.monotonic() + self._reload_every
        return self._sleep_for()

    def close(self) -> None:
        """Give the lock up."""
        self._lock.release()
        self._holding = False

    # -- storage ------------------------------------------------------------

    @property
    def _storage(self) -> Storage:
        return self._app.configs.storage

    def _now(self) -> datetime:
        return datetime.now(tz=self._app.configs.tz)

    def _sync_declared(self) -> None:
        """Write the crons declared in code; drop declared ones no longer there."""
        records = {r.job_id: r for r in self._run(self._storage.get_schedules())}
        declared: list[ScheduledJob] = []
        keep: set[str] = set()
        for route in routes_of(self._app):
            cron = route.options.get("cron")
            if cron is None:
                continue
            cron = Cron(cron) if isinstance(cron, str) else cron
            job_id = f"{route.name}{DECLARED_CRON_SUFFIX}"
            keep.add(job_id)
            stored = records.get(job_id)
            if stored is not None and self._same_cron(stored, cron):
                continue
            declared.append(self._declared_record(route, job_id, cron))
        stale = [
            job_id
            for job_id in records
            if job_id.endswith(DECLARED_CRON_SUFFIX) and job_id not in keep
        ]
        if declared:
            self._run(self._storage.add_schedule(*declared))
        if stale:
            logger.info("Removing crons no longer declared: %s", stale)
            self._delete(stale)

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
        parser = self._app.configs.cron_factory(cron.expression)
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

    def _reload(self) -> None:
        """Follow the storage: new, changed and removed crons."""
        records: Sequence[ScheduledJob] = self._run(self._storage.get_schedules())
        definitions = {r.job_id: r for r in records if not r.job_id.endswith(STATE_SUFFIX)}
        states = {
            r.job_id.removesuffix(STATE_SUFFIX): r
            for r in records
            if r.job_id.endswith(STATE_SUFFIX)
        }
        broken: list[str] = []
        for job_id, record in definitions.items():
            digest = _digest(record)
            entry = self._entries.get(job_id)
            if entry is not None and entry.digest == digest:
                continue
            try:
                self._entries[job_id] = self._load(record, digest, states.get(job_id))
            except Exception as exc:  # noqa: BLE001 - bad data must not stop beat
                logger.warning(
                    "Removing stored schedule %r (%s): %s: %s",
                    job_id,
                    record.name,
                    type(exc).__name__,
                    exc,
                )
                broken.append(job_id)
        for job_id in set(self._entries) - set(definitions):
            del self._entries[job_id]
        orphans = [f"{job_id}{STATE_SUFFIX}" for job_id in states if job_id not in definitions]
        if broken or orphans:
            self._delete(broken, extra=orphans)

    def _load(self, record: ScheduledJob, digest: str, state_record: ScheduledJob | None) -> _Entry:
        stored = read_cron_record(self._app, record)
        # The record's route name is the one Jobify goes by, as in its restore.
        route = route_by_name(self._app, record.name)
        if route is None or stored.name != record.name:
            msg = f"no route named {record.name!r} any more"
            raise LookupError(msg)
        spec = func_spec_of(route)
        loader = self._app.configs.loader
        typed = {
            name: loader.load(value, spec.type_params.get(name, Any))
            for name, value in stored.arguments.items()
        }
        bound = spec.signature.bind(**typed)
        args, kwargs = encode_call(
            stored.name, bound, spec.type_params, self._codec, spec.inject_params
        )
        parser = self._app.configs.cron_factory(stored.cron.expression)
        state = _state_from(state_record, digest)
        if state is None:
            state = CronState(
                offset=stored.offset, next_run_at=record.next_run_at, run_count=stored.run_count
            )
        resume(state, stored.cron, parser, self._now())
        return _Entry(
            job_id=stored.job_id,
            route=stored.name,
            cron=stored.cron,
            parser=parser,
            digest=digest,
            args=args,
            kwargs=kwargs,
            state=state,
        )

    def _save(self, entry: _Entry) -> None:
        self._run(self._storage.add_schedule(_state_record(entry)))

    def _delete(self, job_ids: list[str], extra: list[str] | None = None) -> None:
        ids = [*job_ids, *(f"{j}{STATE_SUFFIX}" for j in job_ids), *(extra or [])]
        if ids:
            self._run(self._storage.delete_schedule_many(ids))

    # -- firing ---------------------------------------------------------------

    def _fire_due(self) -> None:
        now = self._now()
        finished: list[str] = []
        for entry in list(self._entries.values()):
            state = entry.state
            ticks: list[Tick] = []
            while (
                state.active(entry.cron)
                and state.next_run_at <= now
                and len(ticks) < _MAX_FIRES_PER_TICK
            ):
                ticks.append(fire(state, entry.parser))
            if not ticks:
                continue
            task_ids = [uuid.uuid4().hex for _ in ticks]
            for tick, task_id in zip(ticks, task_ids, strict=True):
                remember(state, tick.run, task_id)
            # Written before publishing: a standby taking over never re-fires.
            self._save(entry)
            for tick, task_id in zip(ticks, task_ids, strict=True):
                try:
                    self._publish(entry, tick, task_id)
                except Exception:  # as Celery's beat does: log, go on
                    logger.exception(
                        "Cron %r: run %d (planned %s) could not be published and is lost",
                        entry.job_id,
                        tick.run,
                        tick.planned.isoformat(),
                    )
            if state.finished(entry.cron):
                finished.append(entry.job_id)
        for job_id in finished:
            logger.info("Cron %r reached its max_runs", job_id)
            if not job_id.endswith(DECLARED_CRON_SUFFIX):
                # A run-time cron ends as in Jobify: its schedule goes away.
                # A declared one keeps its records, so that a beat restart
                # does not start its runs over.
                del self._entries[job_id]
                self._delete([job_id])

    def _publish(self, entry: _Entry, tick: Tick, task_id: str) -> None:
        header = encode_header(
            exec_at=tick.planned,
            request_state={},
            codec=self._codec,
            cron=CronTick(job_id=entry.job_id, run=tick.run, expression=entry.cron.expression),
        )
        task = self._celery_app.tasks[entry.route]
        # Beat reads the runs' outcomes itself (_read_outcomes), so it needs
        # no AsyncResult, nor the result subscription Celery makes for one.
        send_followed(
            task,
            entry.args,
            entry.kwargs,
            task_id=task_id,
            headers={HEADER_KEY: header},
        )

    def _read_outcomes(self) -> None:
        """Count finished runs in order, for ``max_failures``."""
        pending_ids = [
            task_id
            for entry in self._entries.values()
            for _, task_id in (entry.state.pending or ())
        ]
        if not pending_ids:
            return
        metas = dict(read_metas(self._celery_app.backend, pending_ids))
        for entry in self._entries.values():
            state = entry.state
            changed = False
            while state.pending:
                _, task_id = state.pending[0]
                outcome = read_meta(metas.get(task_id))
                if not outcome.done:
                    break
                state.pending.pop(0)
                if outcome.status is JobStatus.CANCELLED:
                    continue
                changed = True
                if record_outcome(state, entry.cron, succeeded=outcome.status is JobStatus.SUCCESS):
                    logger.warning(
                        "Cron %r stopped after %d consecutive failed runs (max_failures)",
                        entry.job_id,
                        state.failures,
                    )
            if changed:
                self._save(entry)

    def _sleep_for(self) -> float:
        now = self._now()
        until_reload = max(0.0, self._next_reload - time.monotonic())
        waits = [
            (entry.state.next_run_at - now).total_seconds()
            for entry in self._entries.values()
            if entry.state.active(entry.cron)
        ]
        return max(0.0, min([until_reload, _LOCK_RETRY, *waits]))


def _digest(record: ScheduledJob) -> str:
    return hashlib.sha256(record.name.encode() + b"\0" + bytes(record.message)).hexdigest()


def _state_record(entry: _Entry) -> ScheduledJob:
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
