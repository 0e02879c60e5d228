"""The one place that reaches into Jobify's private machinery.

Jobify 0.14 has no public hook for "publish instead of arming a local timer"
or "run the inner chain for a context built elsewhere", so this module does
those few things on private attributes. Every other module of the package
talks to Jobify through its public names and through the functions here.
The version range in ``pyproject.toml`` pins the Jobify these assumptions
were written against, and ``tests/unit/test_jobify_assumptions.py`` checks
each of them, so an upgrade that breaks one fails loudly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, cast

from jobify import Cron, Job, JobContext, JobStatus, RequestState
from jobify._internal.common.constants import INFINITY, PATCH_CRON_DEF_ID
from jobify._internal.cron_parser import CronParser
from jobify._internal.message import AtArguments, CronArguments, Message, PushArguments
from jobify._internal.middleware.retry import RetryMiddleware
from jobify._internal.router.root import CRONS_DEF_KEY, RootRoute
from jobify._internal.scheduler.misfire_policy import handle_misfire_policy
from jobify._internal.serializers.json_extended import json_extended_encoder
from jobify._internal.storage.base import ScheduledJob
from jobify._internal.storage.sqlite import SQLiteStorage
from jobify._internal.typeadapter.dummy import DummyDumper, DummyLoader

from jobify_celery._errors import ResultUnavailableError

if TYPE_CHECKING:
    import asyncio

    from jobify import GracePolicy, Jobify, MisfirePolicy, OuterContext, ScheduleBuilder
    from jobify._internal.inspection import FuncSpec
    from jobify._internal.task_tracker import TaskTracker

__all__ = (
    "DECLARED_CRON_SUFFIX",
    "INFINITE_RUNS",
    "AtArguments",
    "CronArguments",
    "CronParser",
    "PushArguments",
    "RemoteJob",
    "RootRoute",
    "ScheduledJob",
    "StoredCron",
    "app_is_started",
    "apply_misfire_policy",
    "build_job_context",
    "cron_record",
    "extended_encode",
    "finish_job",
    "func_spec_of",
    "handle_of",
    "has_default_dumper",
    "has_default_loader",
    "install_hooks",
    "is_jobify_sqlite",
    "make_remote",
    "read_cron_record",
    "rebind_loop",
    "replace_storage",
    "route_by_name",
    "routes_of",
    "run_inner_chain",
    "running_job",
    "runtime_cron_record",
    "sqlite_add_if_absent",
    "sqlite_get_many",
    "tracker_of",
)

DECLARED_CRON_SUFFIX: Final[str] = PATCH_CRON_DEF_ID
#: ``Cron.max_runs`` for "no limit".
INFINITE_RUNS: Final[int] = INFINITY

PublishTerminal: TypeAlias = Callable[["OuterContext"], Awaitable["asyncio.Handle"]]


class RegistrationHooks(Protocol):
    """What the bridge does around Jobify's route registration."""

    def take_over(
        self,
        obj: Any,  # noqa: ANN401
        options: Mapping[str, Any],
    ) -> tuple[Callable[..., Any], dict[str, Any]] | None:
        """Turn a Celery task given to ``@app.task`` into (function, options)."""
        ...

    def before(self, name: str, func: Callable[..., Any], options: Mapping[str, Any]) -> None:
        """Check a route about to be registered."""
        ...

    def after(self, name: str, func: Callable[..., Any], options: Mapping[str, Any]) -> None:
        """React to a route just registered."""
        ...


class RemoteJob(Job[Any]):
    """A Jobify ``Job`` whose run happens in a Celery worker.

    The producer's ``Job`` objects are switched to this class once their
    message is published. It keeps Jobify's behaviour and adds the two
    things a remote run needs: ``wait()`` refuses to hang when no result
    can ever arrive, ``result()`` says so when this producer stopped
    following the job (``ResultUnavailableError``), and ``cancel()`` also
    revokes the Celery task.
    """

    __slots__ = ()

    def result(self) -> Any:  # noqa: ANN401
        """Return the worker's result, as Jobify does, or say why it cannot be known here."""
        if isinstance(self.exception, ResultUnavailableError):
            raise self.exception
        return super().result()

    async def wait(self) -> None:
        """Wait until the worker's result reaches this producer."""
        handle = self._handle
        check = getattr(handle, "check_waitable", None)
        if check is not None:
            check()
        await super().wait()

    async def cancel(self, *, terminate: bool = False) -> None:
        """Cancel the job wherever it is; a finished job stays as it is.

        Before its run, no worker runs it (even after its ETA); while an async
        function runs, its worker cancels it cooperatively (``finally`` blocks
        run). ``terminate=True`` also kills the prefork process running it,
        the only way to stop a synchronous function.
        """
        if self.is_done():
            return
        handle = self._handle
        revoke = getattr(handle, "revoke", None)
        if revoke is not None:
            await revoke(terminate=terminate)
        await super().cancel()
        cancelled = getattr(handle, "cancelled", None)
        if cancelled is not None:
            await cancelled()  # after the storage forgot it (a cron's change feed)


def make_remote(job: Job[Any]) -> RemoteJob:
    """Turn a ``Job`` built by Jobify's scheduler into a ``RemoteJob``.

    ``Job`` has ``__slots__`` and ``RemoteJob`` adds none, so the switch of
    class keeps the object, its identity and its state: the ``Job`` the
    caller of ``push()`` holds is this very object.
    """
    job.__class__ = RemoteJob
    return cast("RemoteJob", job)


def install_hooks(app: Jobify, terminal: PublishTerminal, hooks: RegistrationHooks) -> None:
    """Adapt a Jobify app to run its jobs on Celery.

    * The outer chain's last step publishes: Jobify builds each route's outer
      chain at startup from ``app._schedule``, and an instance attribute of
      the same name takes its place.
    * No local timer at startup: ``app._restore_schedules`` would arm timers
      for declared crons and stored schedules; with Celery, beat fires crons
      and the broker keeps pending jobs, so it only drops Jobify's record of
      declared crons (beat reads them from the routes' options).
    * Retries are re-publishes through the broker, decided after the whole
      inner chain failed, so Jobify's in-process retry step (an
      ``asyncio.sleep`` that would hold a worker slot) leaves the chain.
    * Routers' routes are registered once: Jobify 0.14 registers them at
      every startup (``propagate_real_routes``) and, on a second startup of
      the same app (a test suite, a restarted producer), prefixes them again
      and fails; the routes it registered the first time stay registered.
    * Routers' middleware runs once per job after any number of startups:
      Jobify 0.14 prepends the parent's middleware and outer middleware to
      each router's own lists, in place, at every startup, so after the
      third start of an app a router's outer middleware ran three times per
      push. What a startup prepended is taken off before the next one.
    * Route registration goes through ``hooks``: options are checked when a
      route is declared on the app (and when routers' routes are registered
      at startup), and a Celery task given to ``@app.task`` is taken over.
    """

    async def restore_nothing() -> None:
        app.state.pop(CRONS_DEF_KEY, None)

    propagate = app.propagate_real_routes
    propagated: list[bool] = []

    def propagate_once() -> None:
        if not propagated:
            propagate()
            propagated.append(True)

    app_dict = vars(app)
    app_dict["_schedule"] = terminal
    app_dict["_restore_schedules"] = restore_nothing
    app_dict["propagate_real_routes"] = propagate_once
    app_dict["_propagate_startup"] = _startup_without_doubling(app)

    registrator = app.task
    registrator._system_middleware = tuple(  # noqa: SLF001
        step
        for step in registrator._system_middleware  # noqa: SLF001
        if not isinstance(step, RetryMiddleware)
    )
    register = registrator.register
    make_wrapper = registrator._register  # noqa: SLF001

    def checked_register(name: str, func: Callable[..., Any], options: Any) -> Any:  # noqa: ANN401
        hooks.before(name, func, options)
        route = register(name, func, options)
        hooks.after(name, func, options)
        return route

    def taking_over(options: Any) -> Callable[[Any], Any]:  # noqa: ANN401
        def wrapper(obj: Any) -> Any:  # noqa: ANN401
            taken = hooks.take_over(obj, options)
            if taken is None:
                return make_wrapper(options)(obj)
            func, route_options = taken
            return make_wrapper(cast("Any", route_options))(func)

        return wrapper

    vars(registrator)["register"] = checked_register
    vars(registrator)["_register"] = taking_over


def _startup_without_doubling(app: Jobify) -> Callable[[Any], Awaitable[None]]:
    """Wrap Jobify's startup propagation so that routers' middleware lists do not grow.

    Jobify calls ``_propagate_startup(router)`` for the app, then for each
    router below it, each time after putting the parent's (already merged)
    middleware in front of the router's own. The wrapper notes, as each
    router's call starts, how many items that put in front; at the next
    startup it takes them off again, leaving each router its own list
    (middleware a user added to a router meanwhile stays).
    """
    propagate = app._propagate_startup  # noqa: SLF001
    prepended: dict[Any, tuple[int, int]] = {}

    async def propagate_startup(router: Any) -> None:  # noqa: ANN401
        if router is app:
            for below, (inner, outer) in prepended.items():
                below.task._middleware = below.task._middleware[inner:]  # noqa: SLF001
                below.task._outer_middleware = below.task._outer_middleware[outer:]  # noqa: SLF001
            prepended.clear()
        else:
            parent = router.parent
            prepended[router] = (
                len(parent.task._middleware),  # noqa: SLF001
                len(parent.task._outer_middleware),  # noqa: SLF001
            )
        await propagate(router)

    return propagate_startup


def app_is_started(app: Jobify) -> bool:
    """Tell whether ``app.startup()`` has run and ``shutdown()`` has not."""
    return bool(app.configs.app_started)


def rebind_loop(app: Jobify) -> bool:
    """Make the app use the loop it is being started on, not one it ran on before.

    Jobify 0.14 remembers the first loop that asks for one
    (``configs.getloop``, a ``cache_result`` of ``asyncio.get_running_loop``,
    shared by the sync-function runners and the storage). An app started again
    on another loop (a test suite's second ``asyncio.run``, an ``async with
    app:`` after a sync eager call ran on the bridge's own loop) would hand its
    sync functions to a closed loop. Clearing the remembered loop makes the
    next ask remember the current one. Returns False if Jobify no longer caches
    this way (nothing done).
    """
    getloop = app.configs.getloop
    code = getattr(getloop, "__code__", None)
    cells = getattr(getloop, "__closure__", None)
    if code is None or cells is None or "result" not in code.co_freevars:
        return False
    cells[code.co_freevars.index("result")].cell_contents = None
    return True


def replace_storage(app: Jobify, storage: object) -> None:
    """Make ``storage`` the app's storage (before it starts; a beat process's own view)."""
    app.configs.storage = cast("Any", storage)


def is_jobify_sqlite(storage: object) -> bool:
    """Tell whether ``storage`` is Jobify's own ``SQLiteStorage`` (whose internals follow)."""
    return isinstance(storage, SQLiteStorage)


async def sqlite_add_if_absent(storage: SQLiteStorage, record: ScheduledJob) -> bool:
    """Insert ``record`` unless its job id is stored; tell whether it was inserted.

    One statement on the storage's own connection and worker queue (Jobify 0.14
    has no public way to run it), so SQLite's lock makes it atomic across
    processes sharing the file.
    """
    query = (
        f"INSERT INTO {storage.table_name} (job_id, name, message, status, next_run_at) "  # noqa: S608 - Jobify validates the table name
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING"
    )
    row = (
        record.job_id,
        record.name,
        record.message,
        record.status,
        record.next_run_at.isoformat(),
    )

    def insert() -> bool:
        cursor = storage._conn.execute(query, row)  # noqa: SLF001
        storage._conn.commit()  # noqa: SLF001
        return cursor.rowcount == 1

    return await storage._execute(insert)  # noqa: SLF001


async def sqlite_get_many(storage: SQLiteStorage, job_ids: list[str]) -> list[ScheduledJob]:
    """Read the records of ``job_ids`` (those that exist) from Jobify's SQLite storage."""
    if not job_ids:
        return []

    def get() -> list[ScheduledJob]:
        found: list[ScheduledJob] = []
        conn = storage._conn  # noqa: SLF001
        for start in range(0, len(job_ids), 500):
            batch = job_ids[start : start + 500]
            query = (
                f"SELECT job_id, name, message, status, next_run_at FROM {storage.table_name} "  # noqa: S608 - Jobify validates the table name
                f"WHERE job_id IN ({','.join('?' * len(batch))})"
            )
            found.extend(
                ScheduledJob(
                    job_id=row[0],
                    name=row[1],
                    message=row[2],
                    status=JobStatus(row[3]),
                    next_run_at=datetime.fromisoformat(row[4]).astimezone(storage.tz),
                )
                for row in conn.execute(query, batch).fetchall()
            )
        return found

    return await storage._execute(get)  # noqa: SLF001


def handle_of(job: Job[Any]) -> object:
    """Return what the job's ``_handle`` holds (a ``ResultHandle`` once published)."""
    return job._handle  # noqa: SLF001


def finish_job(app: Jobify, job: Job[Any]) -> None:
    """Wake everyone awaiting ``job`` and drop it from the active jobs."""
    job._event.set()  # noqa: SLF001
    tracker_of(app).unregister_job(job.id)


def has_default_loader(app: Jobify) -> bool:
    """Tell whether the app reads values back without a loader of its own."""
    return type(app.configs.loader) is DummyLoader


def has_default_dumper(app: Jobify) -> bool:
    """Tell whether the app writes values without a dumper of its own."""
    return type(app.configs.dumper) is DummyDumper


def tracker_of(app: Jobify) -> TaskTracker:
    """Return the app's registry of active jobs (``find_job`` reads it)."""
    return app.task._task_tracker  # noqa: SLF001


def routes_of(app: Jobify) -> list[RootRoute[..., Any]]:
    """Return every route of the started app, routers' routes included."""
    return list(app.task._routes.values())  # noqa: SLF001


def route_by_name(app: Jobify, name: str) -> RootRoute[..., Any] | None:
    """Return the started app's route of that full name, if any."""
    return app.task._routes.get(name)  # noqa: SLF001


def func_spec_of(route: RootRoute[..., Any]) -> FuncSpec[Any]:
    """Return what Jobify inspected of a route's function."""
    return route.func_spec


def extended_encode(value: Any) -> Any:  # noqa: ANN401
    """Tag a value the way Jobify's extended JSON serializer does."""
    return json_extended_encoder(value)


def build_job_context(
    *,
    app: Jobify,
    builder: ScheduleBuilder[Any],
    job: Job[Any],
    request_state: RequestState,
) -> JobContext:
    """Assemble the ``JobContext`` Jobify's scheduler would have built."""
    return JobContext(
        app=app,
        job=job,
        state=builder._state,  # noqa: SLF001
        runnable=builder._runnable,  # noqa: SLF001
        request_state=request_state,
        route_options=builder.route_options,
        jobify_config=app.configs,
        schedule_builder=builder,
    )


def running_job(
    *,
    job_id: str,
    exec_at: datetime,
    storage: Any,  # noqa: ANN401 - Jobify's Storage
    unregister_hook: Callable[[str], None],
    done: asyncio.Event,
) -> Job[Any]:
    """Return the ``Job`` a worker hands its run's ``JobContext``, already RUNNING.

    Jobify gives every ``Job`` an ``asyncio.Event`` of its own (set from the
    start, for whoever awaits the job in its process); nothing awaits a
    worker's job, so all of them share ``done``, one set event, instead of
    keeping one each (~0.7 KiB per job in flight).
    """
    job: Job[Any] = Job(
        job_id=job_id,
        exec_at=exec_at,
        storage=storage,
        unregister_hook=unregister_hook,
        job_status=JobStatus.RUNNING,
    )
    job._event = done  # noqa: SLF001
    return job


def run_inner_chain(builder: ScheduleBuilder[Any], context: JobContext) -> Awaitable[Any]:
    """Run the route's inner chain (user middleware, retry, handlers, timeout)."""
    return builder._chain_middleware(context)  # noqa: SLF001


def apply_misfire_policy(
    *,
    parser: CronParser,
    next_run_at: datetime,
    now: datetime,
    policy: MisfirePolicy | GracePolicy,
) -> datetime:
    """Jobify's own misfire rule: when a cron found late runs next."""
    return handle_misfire_policy(
        cron_parser=parser, next_run_at=next_run_at, real_now=now, policy=policy
    )


@dataclass(frozen=True, slots=True)
class StoredCron:
    """A cron schedule as Jobify keeps it in its storage."""

    job_id: str
    name: str
    arguments: dict[str, Any]
    cron: Cron
    offset: datetime
    run_count: int


def read_cron_record(app: Jobify, record: ScheduledJob) -> StoredCron:
    """Decode a storage record written by Jobify's scheduler (or by beat).

    Raises ``ValueError`` when the record is not a cron schedule.
    """
    configs = app.configs
    message = configs.loader.load(configs.serializer.loadb(record.message), Message)
    trigger = message.trigger
    if not isinstance(trigger, CronArguments):
        msg = f"stored job {record.job_id!r} is not a cron schedule"
        raise ValueError(msg)  # noqa: TRY004 - a record of the wrong kind is bad data
    return StoredCron(
        job_id=record.job_id,
        name=message.name,
        arguments=dict(message.arguments),
        cron=trigger.cron,
        offset=trigger.offset,
        run_count=trigger.run_count,
    )


def runtime_cron_record(app: Jobify, context: OuterContext) -> ScheduledJob:
    """Encode the cron a producer schedules, as Jobify's ``persist_job_hook`` would store it.

    (Jobify's scheduler writes it with ``Storage.add_schedule``, an upsert;
    the bridge needs the record itself to insert it only if absent.)
    """
    app_configs = app.configs
    dumper = app_configs.dumper.dump
    params = context.func_spec.type_params
    arguments = {
        name: dumper(value, params[name])
        for name, value in context.runnable.origin_arguments.items()
    }
    message = Message(
        job_id=context.job.id,
        name=context.schedule_builder.name,
        arguments=arguments,
        trigger=context.trigger,
    )
    payload = app_configs.serializer.dumpb(dumper(message, Message))
    return ScheduledJob(
        job_id=context.job.id,
        name=context.schedule_builder.name,
        message=payload,
        status=JobStatus.SCHEDULED,
        next_run_at=context.job.exec_at,
    )


def cron_record(  # noqa: PLR0913
    app: Jobify,
    *,
    job_id: str,
    name: str,
    arguments: dict[str, Any],
    cron: Cron,
    offset: datetime,
    next_run_at: datetime,
) -> ScheduledJob:
    """Encode a cron schedule the way Jobify's scheduler stores one."""
    configs = app.configs
    message = Message(
        job_id=job_id,
        name=name,
        arguments=arguments,
        trigger=CronArguments(job_id=job_id, cron=cron, offset=offset, run_count=0),
    )
    payload = configs.serializer.dumpb(configs.dumper.dump(message, Message))
    return ScheduledJob(
        job_id=job_id,
        name=name,
        message=payload,
        status=JobStatus.SCHEDULED,
        next_run_at=next_run_at,
    )
