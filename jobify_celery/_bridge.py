"""``JobifyCelery``: binds one Jobify app to one Celery app.

Binding does three things, all before anything runs:

* the Jobify app's outer chain ends in a publish to Celery, and its startup
  arms no local timer (``_jobify.install_hooks``);
* when the Celery app is finalized (in every process, before a worker
  consumes), each Jobify route becomes a Celery task of the same name whose
  body runs the route's inner chain (``_worker.Executor``);
* Celery's worker signals start one event loop and one started Jobify app per
  pool process and stop them when the worker stops (``_runtime``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import typing
from typing import TYPE_CHECKING, Any, Final

from billiard.common import terminate_handler_fired
from celery import Celery, Task, signals
from celery.concurrency.prefork import TaskPool as PreforkPool
from jobify import Jobify
from jobify.serializers import ExtendedJSONSerializer

from jobify_celery._aiopool._green import await_only, in_job_greenlet
from jobify_celery._aiopool._trace import traced_on_loop as trace_may_run_on_loop
from jobify_celery._capture import Capture
from jobify_celery._celery_traps import keep_prefetch_after_reconnect
from jobify_celery._codec import ValueCodec, tagged_classes, wire_signature
from jobify_celery._errors import AppBindingError
from jobify_celery._jobify import (
    app_is_started,
    extended_encode,
    has_default_dumper,
    has_default_loader,
    install_hooks,
    rebind_loop,
    route_by_name,
)
from jobify_celery._names import route_table
from jobify_celery._options import (
    celery_task_options,
    is_positive_seconds,
    publish_options_of,
    validate_route_options,
)
from jobify_celery._pg_startup import guard_table_creation
from jobify_celery._producer import ProducerSession, Publisher
from jobify_celery._results import watcher_for
from jobify_celery._runtime import ProcessRuntime
from jobify_celery._senders import Attempt, broker_name, sender_for
from jobify_celery._signal_wakeup import SignalWakeup, wakeup_step
from jobify_celery._store import store_retry_problem
from jobify_celery._worker import Executor, injected_names
from jobify_celery._wrap import WrappedTask, is_celery_task, route_function, unwrap

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Awaitable, Callable, Mapping

    from celery.backends.base import Backend

    from jobify_celery._senders import Sender

__all__ = ("JobifyCelery",)

logger = logging.getLogger("jobify_celery")

_CELERY_ATTR: Final = "_jobify_celery"
#: Seconds leaving the app may spend closing the bridge's own connections.
CLOSE_TIMEOUT: Final = 1.0
_STOP_TIMEOUT: Final = 30.0
_TERMINATED_STOP_TIMEOUT: Final = 1.0


class JobifyTask(Task):  # type: ignore[misc]
    """Base class of the Celery tasks that stand for Jobify routes."""

    #: The Jobify route this task runs (its full name, which is also the task's).
    jobify_route: str | None = None
    #: Routing options of the route (``metadata={"celery": {"queue": ...}}``),
    #: applied to every publish of the task unless the caller gives its own.
    jobify_publish_options: Mapping[str, Any] = {}

    def apply_async(
        self,
        args: Any = None,  # noqa: ANN401
        kwargs: Any = None,  # noqa: ANN401
        **options: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        """Publish as Celery does, with the route's routing options as defaults.

        Called from a job of the asyncio pool (a retry, a chain's next step, a
        ``.delay()`` in the job), the message is sent from the loop, which
        runs the other jobs meanwhile.
        """
        for key, value in self.jobify_publish_options.items():
            options.setdefault(key, value)
        if in_job_greenlet() and "producer" not in options and "connection" not in options:
            bridge = vars(self.app).get(_CELERY_ATTR)
            if isinstance(bridge, JobifyCelery):
                return bridge._publish_from_pool(self, args, kwargs, options)  # noqa: SLF001
        return super().apply_async(args, kwargs, **options)


class _BridgePlugin:
    """Jobify plugin that ties the bridge to the app's start and stop."""

    __slots__ = ("_bridge",)

    def __init__(self, bridge: JobifyCelery) -> None:
        self._bridge = bridge

    async def startup(self, app: Jobify) -> None:  # noqa: ARG002 - Jobify's plugin protocol
        await self._bridge._on_app_startup()  # noqa: SLF001

    async def shutdown(self) -> None:
        await self._bridge._on_app_shutdown()  # noqa: SLF001

    @property
    def bridge(self) -> JobifyCelery:
        """The bridge this plugin belongs to."""
        return self._bridge


def bridge_of_app(app: object) -> JobifyCelery | None:
    """Return the bridge of a Jobify app bound with ``JobifyCelery`` (else ``None``)."""
    for plugin in getattr(app, "plugins", ()):
        if isinstance(plugin, _BridgePlugin):
            return plugin.bridge
    return None


class _Registration:
    """The bridge's side of Jobify's route registration."""

    __slots__ = ("_bridge",)

    def __init__(self, bridge: JobifyCelery) -> None:
        self._bridge = bridge

    def take_over(
        self,
        obj: Any,  # noqa: ANN401
        options: Mapping[str, Any],
    ) -> tuple[Callable[..., Any], dict[str, Any]] | None:
        return self._bridge._take_over(obj, options)  # noqa: SLF001

    def before(self, name: str, func: Callable[..., Any], options: Mapping[str, Any]) -> None:
        self._bridge._before_register(name, func, options)  # noqa: SLF001

    def after(self, name: str, func: Callable[..., Any], options: Mapping[str, Any]) -> None:
        self._bridge._after_register(name, func, options)  # noqa: SLF001


class JobifyCelery:
    """Run a Jobify app's jobs on Celery workers.

    Create it once, right after both apps, in the module every role imports
    (producers, ``celery -A module:celery_app worker``, beat)::

        celery_app = Celery("shop", broker=..., backend=...)
        app = Jobify(middleware=[...], outer_middleware=[...])
        JobifyCelery(app, celery_app)

    Routes may be declared before or after this call, as long as it happens
    before the Celery app is finalized.

    Args:
        app: the Jobify app; it must not be started yet nor bound already.
        celery_app: the Celery app; it must not be finalized yet.
        track_started: store STARTED when a worker begins a job, so the
            producer's ``job.status`` shows RUNNING. Off by default, as in
            Celery: it costs a backend read and write per job (measured: a
            third of the drain throughput of no-op tasks).
        publish_timeout: seconds a push may take to reach the broker (connect,
            declare, publish, confirm) before it raises ``PublishError``; the
            event loop runs meanwhile, and ``asyncio.wait_for`` or a cancel
            end a push sooner. Also bounds a cancel's calls to the broker and
            result backend.
        publish_confirms: wait for RabbitMQ's publisher confirm before a push
            returns, so a push that returned means the broker has the job
            (and a message no queue takes raises instead of vanishing). Off
            by default, as in Celery: a push then returns once its message is
            written to the connection's socket, and a connection lost at the wrong
            moment loses the messages in flight, as with ``apply_async``. On,
            a push waits one broker round trip more (persistent messages are
            confirmed once on disk): measured here, a third of the speed one
            push at a time, about a tenth less with 100 pushes in flight.
        backend_outage_timeout: seconds a producer waits for an unreachable
            result backend before every job it awaits raises
            ``ResultUnavailableError`` (the jobs themselves go on; their
            results are stored once the backend is back). ``None``: wait
            for as long as it takes.
        pool: ``"asyncio"`` makes ``celery worker`` use the asyncio pool
            (``jobify_celery.pool:AsyncioPool``): ``-c N`` jobs in flight on
            one event loop per process, no thread per job. ``None`` (the
            default) leaves Celery's choice (prefork, or ``-P``).
        shutdown_grace: with the asyncio pool, seconds a warm shutdown lets
            the jobs in flight finish before it ends them; their messages go
            back to the queue.
        blocked_loop_warning: with the asyncio pool, seconds after which a
            job that holds the event loop (computing, or calling something
            synchronous) is logged, with its name and where it is.
        tune_gc: with the asyncio pool in a worker process of its own
            (``celery worker``, not an in-process test worker), once the app
            has started, freeze the heap as it is (``gc.freeze``) and
            raise the collector's first threshold from 700 to 10,000
            allocations (see ``jobify_celery._aiopool._gc``). With many jobs
            in flight the defaults spend a quarter of the worker's time in
            the collector. ``False`` leaves the collector as it is.

    """

    __slots__ = (
        "_backend_outage_timeout",
        "_blocked_loop_warning",
        "_check_options",
        "_codec",
        "_executor",
        "_hostnames",
        "_publish_confirms",
        "_publish_timeout",
        "_runs",
        "_runtime",
        "_session",
        "_shutdown_grace",
        "_signal_wakeup",
        "_track_started",
        "_tune_gc",
        "_wrapped",
        "app",
        "celery_app",
    )

    def __init__(  # noqa: PLR0913 - keyword options, one per behaviour
        self,
        app: Jobify,
        celery_app: Celery,
        *,
        track_started: bool = False,
        publish_timeout: float = 10.0,
        publish_confirms: bool = False,
        backend_outage_timeout: float | None = 60.0,
        pool: str | None = None,
        shutdown_grace: float = 30.0,
        blocked_loop_warning: float = 0.5,
        tune_gc: bool = True,
    ) -> None:
        _check_binding(app, celery_app)
        _check_seconds("publish_timeout", publish_timeout)
        _check_seconds("backend_outage_timeout", backend_outage_timeout, optional=True)
        _check_seconds("shutdown_grace", shutdown_grace)
        _check_seconds("blocked_loop_warning", blocked_loop_warning)
        if not isinstance(tune_gc, bool):
            msg = f"JobifyCelery(tune_gc=...) takes True or False, got {tune_gc!r}"
            raise TypeError(msg)
        if pool not in (None, "asyncio"):
            msg = f"JobifyCelery(pool=...) takes 'asyncio' or None, got {pool!r}"
            raise ValueError(msg)
        self.app: Final = app
        self.celery_app: Final = celery_app
        self._track_started = track_started
        self._publish_timeout = float(publish_timeout)
        self._publish_confirms = bool(publish_confirms)
        self._backend_outage_timeout = backend_outage_timeout
        self._shutdown_grace = float(shutdown_grace)
        self._blocked_loop_warning = float(blocked_loop_warning)
        self._tune_gc = tune_gc
        self._codec = _codec_for(app)
        self._runtime = ProcessRuntime(app)
        self._executor = Executor(
            app=app, runtime=self._runtime, codec=self._codec, session_of=self._current_session
        )
        self._session: ProducerSession | None = None
        self._hostnames: set[str] = set()
        #: Wakes the worker's hub on SIGTERM and the like (see _signal_wakeup).
        self._signal_wakeup = SignalWakeup()

        self._wrapped: dict[str, WrappedTask] = {}
        #: The function each route's Celery task was registered with.
        self._runs: dict[str, Callable[..., Any]] = {}
        self._check_options = functools.partial(
            validate_route_options, cron_factory=app.configs.cron_factory
        )
        for name, route in route_table(app, started=False):
            self._check_options(name, route.func, route.options)
        install_hooks(
            app,
            Publisher(
                app=app, celery_app=celery_app, codec=self._codec, session_of=self._current_session
            ),
            _Registration(self),
        )
        guard_table_creation(app.configs.storage)
        _use_jobify_beat(celery_app)
        if pool == "asyncio":
            _use_asyncio_pool(celery_app)
        app.add_plugin(_BridgePlugin(self))
        vars(celery_app)[_CELERY_ATTR] = self
        celery_app.on_after_finalize.connect(self._register_tasks, weak=False)
        celery_app.steps["consumer"].add(wakeup_step(self._signal_wakeup))
        signals.worker_init.connect(self._on_worker_init, weak=False)
        signals.worker_process_init.connect(self._on_pool_process_init, weak=False)
        signals.worker_ready.connect(self._on_worker_ready, weak=False)
        signals.worker_process_shutdown.connect(self._on_pool_process_shutdown, weak=False)
        signals.worker_shutdown.connect(self._on_worker_shutdown, weak=False)

    def __repr__(self) -> str:
        return f"<JobifyCelery celery_app={self.celery_app.main!r}>"

    # -- Celery app: tasks -------------------------------------------------

    def _register_tasks(self, sender: Celery, **_: Any) -> None:  # noqa: ANN401
        if sender is not self.celery_app:
            return
        routes = route_table(self.app, started=app_is_started(self.app))
        hints: list[Any] = []
        for name, route in routes:
            self._register_task(name, route.func, route.options)
            hints.extend(_hints(route.func))
        serializer = self.app.configs.serializer
        if isinstance(serializer, ExtendedJSONSerializer):
            serializer.add_system_types(list(tagged_classes(hints)))

    def _register_task(self, name: str, func: Any, route_options: Any) -> None:  # noqa: ANN401
        existing = self.celery_app.tasks.get(name)
        wrapped = self._wrapped.get(name)
        if existing is not None:
            if getattr(existing, "jobify_route", None) == name:
                return
            if wrapped is None:
                raise AppBindingError(_clash_message(name))
            # The Celery task taken over: the route's task replaces it.
            self.celery_app.tasks.unregister(name)
        signature = inspect.signature(func)
        wire = wire_signature(signature, injected_names(signature))
        executor = self._executor

        def run(task: Task, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            return executor(task, name, args, kwargs)

        def check_arguments(*args: Any, **kwargs: Any) -> None:  # noqa: ANN401
            wire.bind(*args, **kwargs)

        run.__name__ = name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        run.__qualname__ = run.__name__
        run.__module__ = getattr(func, "__module__", __name__)
        run.__doc__ = getattr(func, "__doc__", None)
        self._runs[name] = run
        options: dict[str, Any] = {
            "track_started": self._track_started,
            # Jobify retries count themselves; a wrapped task keeps its own.
            "max_retries": None,
            **celery_task_options(route_options, wrapped.options if wrapped else None),
            "name": name,
            "bind": True,
            # Celery adds a shared task to every app it finalizes: another
            # bridged app with a route of the same name would run this one.
            "shared": False,
            "base": JobifyTask,
            "serializer": "json",
            "jobify_route": name,
            "jobify_publish_options": publish_options_of(
                route_options, wrapped.options if wrapped else None
            ),
            "__header__": staticmethod(check_arguments),
        }
        self.celery_app.task(run, **options)

    # -- route registration (see _jobify.install_hooks) ---------------------

    def _take_over(
        self,
        obj: Any,  # noqa: ANN401
        options: Mapping[str, Any],
    ) -> tuple[Callable[..., Any], dict[str, Any]] | None:
        if not is_celery_task(obj):
            return None
        wrapped = unwrap(obj)
        name = options.get("name")
        if name is not None and name != wrapped.name:
            msg = (
                f"@app.task(name={name!r}) on Celery task {wrapped.name!r}: a wrapped "
                "task keeps its Celery name, so old producers and queued messages "
                "still reach it. Drop name=."
            )
            raise AppBindingError(msg)
        if options.get("retry") is not None and wrapped.options.get("autoretry_for"):
            msg = (
                f"Celery task {wrapped.name!r} retries with autoretry_for and the route "
                "asks for Jobify retry=: pick one (see docs/migration.md)."
            )
            raise AppBindingError(msg)
        self._wrapped[wrapped.name] = wrapped
        return route_function(wrapped), {**options, "name": wrapped.name}

    def _before_register(self, name: str, func: Any, options: Mapping[str, Any]) -> None:  # noqa: ANN401
        self._check_options(name, func, options)
        if name in self._wrapped:
            return
        existing = _registered_tasks(self.celery_app).get(name)
        if existing is not None and getattr(existing, "jobify_route", None) != name:
            raise AppBindingError(_clash_message(name))

    def _after_register(self, name: str, func: Any, options: Mapping[str, Any]) -> None:  # noqa: ANN401
        if name in self._wrapped:
            route = route_by_name(self.app, name)
            if route is not None:
                _lend_celery_calls(route, self.celery_app, name)
        if self.celery_app.finalized:
            # Declared after finalization (at import, before any consumer
            # starts): becomes a Celery task right away.
            self._register_task(name, func, options)

    # -- Jobify app: start and stop ----------------------------------------

    async def _on_app_startup(self) -> None:
        self._check_tasks()
        loop = asyncio.get_running_loop()
        runtime = self._runtime
        if runtime.runs_app_elsewhere(other_than=loop):
            # A sync call or an in-process worker started the app on the
            # runtime's own loop (an eager .delay() in a test, say): end that
            # start first, so the app has one lifetime (one lifespan).
            await asyncio.to_thread(runtime.stop)
        rebind_loop(self.app)
        celery_app = self.celery_app
        backend: Backend = celery_app.backend
        watcher = watcher_for(backend, outage_timeout=self._backend_outage_timeout)

        def make_sender() -> Sender:
            return sender_for(
                celery_app,
                inline=runtime.drives_loop_here(),
                timeout=self._publish_timeout,
                confirms=self._publish_confirms,
            )

        self._session = ProducerSession(
            loop,
            watcher,
            _no_backend_reason(backend),
            capture=Capture(celery_app),
            make_sender=make_sender,
            publish_timeout=self._publish_timeout,
            broker=broker_name(celery_app),
        )
        runtime.app_started_on(loop)

    async def _on_app_shutdown(self) -> None:
        session, self._session = self._session, None
        self._runtime.app_stopped()
        if session is not None:
            session.abandon_pending(self.app)
            await session.close(CLOSE_TIMEOUT)

    def _check_tasks(self) -> None:
        """Fail the app's start if a route has no Celery task of its own.

        Registration runs in a Celery signal, whose errors Celery only logs;
        this check makes them stop the producer or the worker process.
        """
        tasks = self.celery_app.tasks
        late: list[str] = []
        for name, _ in route_table(self.app, started=False):
            task = tasks.get(name)
            if task is None:
                late.append(name)
            elif getattr(task, "jobify_route", None) != name:
                raise AppBindingError(_clash_message(name))
        if late:
            msg = (
                f"Jobify routes {late} have no Celery task: they were declared "
                "after the Celery app was finalized. Declare every @app.task at "
                "import time, before anything reads celery_app.tasks."
            )
            raise AppBindingError(msg)

    def _publish_from_pool(
        self,
        task: Task,
        args: Any,  # noqa: ANN401
        kwargs: Any,  # noqa: ANN401
        options: dict[str, Any],
    ) -> Any:  # noqa: ANN401
        """Publish from a job greenlet of the asyncio pool, waiting on the loop."""
        session = self._current_session()
        messages, result = session.capture.messages_and_result(task, args, kwargs, **options)
        task_id = str(messages[0].headers.get("id", "")) if messages else ""
        await_only(session.sender.send(messages, task_id, Attempt()))
        return result

    def _current_session(self) -> ProducerSession:
        session = self._session
        if session is None:
            msg = "The Jobify app is not started: use 'async with app:' before pushing jobs."
            raise AppBindingError(msg)
        return session

    # -- Celery worker: one loop and one started app per pool process -------

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:  # noqa: ANN401
        if getattr(sender, "app", None) is not self.celery_app:
            return
        self._hostnames.add(str(sender.hostname))
        problem = store_retry_problem(sender.app.backend)
        if problem is not None:
            logger.warning(problem)

    def _on_pool_process_init(self, sender: Any = None, **_: Any) -> None:  # noqa: ANN401
        if sender in self._hostnames:
            # A pool process forked after the consumer started holds a copy of
            # the parent's signal wakeup: its signals must not wake the parent.
            self._signal_wakeup.release()
            # A prefork child or the solo pool: one task at a time on this
            # thread, which drives the loop itself.
            try:
                self._runtime.start_inline()
            except Exception:
                logger.exception("The Jobify app failed to start in this worker process")

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:  # noqa: ANN401
        if getattr(sender, "app", None) is not self.celery_app:
            return
        keep_prefetch_after_reconnect(sender.app.conf, getattr(sender, "pool", None))
        if not isinstance(getattr(sender, "pool", None), PreforkPool):
            self._start_runtime()

    def _on_pool_process_shutdown(self, sender: Any = None, **_: Any) -> None:  # noqa: ANN401
        if sender in self._hostnames:
            # A pool process being terminated (revoke(terminate=True), time
            # limit) may have its loop blocked: do not wait long for it.
            terminated = terminate_handler_fired()
            self._runtime.stop(_TERMINATED_STOP_TIMEOUT if terminated else _STOP_TIMEOUT)

    def _on_worker_shutdown(self, sender: Any = None, **_: Any) -> None:  # noqa: ANN401
        if getattr(sender, "app", None) is self.celery_app:
            self._runtime.stop()

    def _start_runtime(self) -> None:
        try:
            self._runtime.ensure_started()
        except Exception:
            logger.exception("The Jobify app failed to start in this worker process")


def _check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not is_positive_seconds(value):
        msg = f"JobifyCelery({name}=...) must be a positive number of seconds, got {value!r}"
        raise ValueError(msg)


def _check_binding(app: Jobify, celery_app: Celery) -> None:
    if not isinstance(app, Jobify):
        msg = f"JobifyCelery(app, celery_app): app must be a Jobify app, got {type(app).__name__}"
        raise TypeError(msg)
    if not isinstance(celery_app, Celery):
        msg = (
            "JobifyCelery(app, celery_app): celery_app must be a Celery app, "
            f"got {type(celery_app).__name__}"
        )
        raise TypeError(msg)
    if any(isinstance(plugin, _BridgePlugin) for plugin in app.plugins):
        msg = (
            "This Jobify app is already bound to a Celery app. Bind each Jobify app "
            "once: create JobifyCelery(app, celery_app) in the module that defines "
            "both apps and import that module everywhere."
        )
        raise AppBindingError(msg)
    if _CELERY_ATTR in vars(celery_app):
        msg = (
            f"Celery app {celery_app.main!r} is already bound to a Jobify app; one "
            "Celery app serves one Jobify app (include routers to combine tasks)."
        )
        raise AppBindingError(msg)
    if celery_app.finalized:
        msg = (
            f"Celery app {celery_app.main!r} is already finalized, so Jobify routes "
            "can no longer become Celery tasks. Create JobifyCelery(app, celery_app) "
            "right after both apps, before anything reads celery_app.tasks or "
            "starts a worker."
        )
        raise AppBindingError(msg)
    if app_is_started(app):
        msg = "Bind the Jobify app before starting it (before 'async with app:')."
        raise AppBindingError(msg)


_CELERY_DEFAULT_SCHEDULERS: Final = frozenset(
    {"celery.beat:PersistentScheduler", "celery.beat.PersistentScheduler"}
)
_JOBIFY_SCHEDULER: Final = "jobify_celery.beat:JobifyScheduler"


def _use_jobify_beat(celery_app: Celery) -> None:
    """Make ``celery beat`` use JobifyScheduler unless another one was chosen."""

    def apply(conf: Any) -> None:  # noqa: ANN401
        if conf.beat_scheduler in _CELERY_DEFAULT_SCHEDULERS:
            conf.beat_scheduler = _JOBIFY_SCHEDULER

    if celery_app.configured:
        apply(celery_app.conf)
    else:
        celery_app.on_after_configure.connect(lambda sender, **_: apply(sender.conf), weak=False)


_ASYNCIO_POOL: Final = "jobify_celery.pool:AsyncioPool"


def _use_asyncio_pool(celery_app: Celery) -> None:
    """Make ``celery worker`` use the asyncio pool unless ``-P`` names another."""

    def apply(conf: Any) -> None:  # noqa: ANN401
        conf.worker_pool = _ASYNCIO_POOL

    if celery_app.configured:
        apply(celery_app.conf)
    else:
        celery_app.on_after_configure.connect(lambda sender, **_: apply(sender.conf), weak=False)


class PoolParts(typing.NamedTuple):
    """What the asyncio pool needs from a bridge."""

    runtime: ProcessRuntime
    runs_on_loop: Callable[[str], bool]
    #: Tells whether a route's jobs may be traced on the loop (``_aiopool._trace``).
    traced_on_loop: Callable[[str], bool]
    #: Runs a route's job as a coroutine: ``Executor.call_async``.
    call: Callable[..., Awaitable[Any]]
    shutdown_grace: float
    blocked_loop_threshold: float
    tune_gc: bool


def pool_parts(celery_app: Celery) -> PoolParts:
    """Return the parts of the bridge bound to ``celery_app``, for the asyncio pool."""
    bridge = vars(celery_app).get(_CELERY_ATTR)
    if not isinstance(bridge, JobifyCelery):
        msg = (
            f"Celery app {celery_app.main!r} has no Jobify app bound: the asyncio pool "
            "runs Jobify jobs. Start the worker with `celery -A module:celery_app worker` "
            "on the module that calls JobifyCelery(app, celery_app)."
        )
        raise AppBindingError(msg)
    tasks = celery_app.tasks
    wrapped = bridge._wrapped  # noqa: SLF001

    def runs_on_loop(name: str) -> bool:
        """Tell whether a task runs on the loop (a Jobify route) or a thread (a Celery task)."""
        task = tasks.get(name)
        return getattr(task, "jobify_route", None) == name and name not in wrapped

    runs = bridge._runs  # noqa: SLF001

    def traced_on_loop(name: str) -> bool:
        run = runs.get(name)
        return run is not None and runs_on_loop(name) and trace_may_run_on_loop(tasks[name], run)

    return PoolParts(
        runtime=bridge._runtime,  # noqa: SLF001
        runs_on_loop=runs_on_loop,
        traced_on_loop=traced_on_loop,
        call=bridge._executor.call_async,  # noqa: SLF001
        shutdown_grace=bridge._shutdown_grace,  # noqa: SLF001
        blocked_loop_threshold=bridge._blocked_loop_warning,  # noqa: SLF001
        tune_gc=bridge._tune_gc,  # noqa: SLF001
    )


class BeatParts(typing.NamedTuple):
    """What the beat scheduler needs from a bridge."""

    app: Jobify
    codec: ValueCodec
    run: Callable[[Awaitable[Any]], Any]
    #: Starts an awaitable on the process's loop without waiting for it.
    submit: Callable[[Awaitable[Any]], concurrent.futures.Future[Any]]
    stop: Callable[[], None]
    #: Sends the runs' messages from ``run``'s loop, as a producer's pushes go.
    sender: Sender
    #: Whether ``sender`` waits for publisher confirms (``publish_confirms``).
    confirms: bool


def beat_parts(celery_app: Celery) -> BeatParts:
    """Return the parts of the bridge bound to ``celery_app``, for beat."""
    bridge = vars(celery_app).get(_CELERY_ATTR)
    if not isinstance(bridge, JobifyCelery):
        msg = (
            f"Celery app {celery_app.main!r} has no Jobify app bound: JobifyScheduler "
            "needs the module that calls JobifyCelery(app, celery_app). Start beat "
            "with `celery -A module:celery_app beat`."
        )
        raise AppBindingError(msg)
    runtime = bridge._runtime  # noqa: SLF001

    def run(awaitable: Awaitable[Any]) -> Any:  # noqa: ANN401
        return runtime.run(_awaited(awaitable))

    def submit(awaitable: Awaitable[Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(_awaited(awaitable), runtime.ensure_started())

    sender = sender_for(
        celery_app,
        inline=False,
        timeout=bridge._publish_timeout,  # noqa: SLF001
        confirms=bridge._publish_confirms,  # noqa: SLF001
    )
    return BeatParts(
        app=bridge.app,
        codec=bridge._codec,  # noqa: SLF001
        run=run,
        submit=submit,
        stop=runtime.stop,
        sender=sender,
        confirms=bridge._publish_confirms,  # noqa: SLF001
    )


async def _awaited(awaitable: Awaitable[Any]) -> Any:  # noqa: ANN401
    return await awaitable


_CELERY_CALLS: Final = ("delay", "apply_async", "s", "si", "signature", "map", "starmap", "chunks")


def _lend_celery_calls(route: Any, celery_app: Celery, name: str) -> None:  # noqa: ANN401
    """Give a wrapped task's route ``.delay()``, ``.s()``, ...: old call sites keep working."""

    def lend(attr: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            return getattr(celery_app.tasks[name], attr)(*args, **kwargs)

        call.__name__ = attr
        return call

    for attr in _CELERY_CALLS:
        setattr(route, attr, lend(attr))


def _registered_tasks(celery_app: Celery) -> Mapping[str, Any]:
    """Celery's task registry as it is, without finalizing the app."""
    registry: Mapping[str, Any] = celery_app._tasks  # noqa: SLF001
    return registry


def _clash_message(name: str) -> str:
    return (
        f"Jobify route {name!r} clashes with a Celery task of the same name; "
        "give the route another name (@app.task(name=...))."
    )


def _codec_for(app: Jobify) -> ValueCodec:
    """Build the app's value codec once, from its dumper, loader and serializer."""
    configs = app.configs
    serializer = configs.serializer
    extended = serializer if isinstance(serializer, ExtendedJSONSerializer) else None
    if not has_default_dumper(app):
        extended = None
    return ValueCodec(
        dump=configs.dumper.dump,
        load=configs.loader.load,
        tag=extended_encode if extended is not None else None,
        untag_hook=extended.decoder_hook if extended is not None else None,
        coerce_plain=has_default_loader(app),
    )


def _hints(func: Any) -> list[Any]:  # noqa: ANN401
    try:
        return list(typing.get_type_hints(func).values())
    except Exception:  # noqa: BLE001 - Jobify reports unresolvable hints itself
        return []


def _no_backend_reason(backend: Backend) -> str:
    from celery.backends.rpc import RPCBackend  # noqa: PLC0415

    if isinstance(backend, RPCBackend):
        return (
            "The Celery app's result backend is rpc://, which sends each result to "
            "the connection that published the task: a Jobify producer cannot follow "
            "it. Use Celery's Redis result backend to await jobs "
            "(backend='redis://localhost:6379/0'), or do not await them."
        )
    return (
        f"The Celery app has no result backend ({type(backend).__name__}), so a "
        "job's result can never reach the producer. Configure one, e.g. "
        "Celery(..., backend='redis://localhost:6379/0'), or do not await jobs."
    )
