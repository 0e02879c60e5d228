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

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

from jobify import Job, JobContext, RequestState
from jobify._internal.common.constants import PATCH_CRON_DEF_ID
from jobify._internal.message import AtArguments, CronArguments, PushArguments
from jobify._internal.router.root import CRONS_DEF_KEY, RootRoute
from jobify._internal.serializers.json_extended import json_extended_encoder
from jobify._internal.typeadapter.dummy import DummyDumper, DummyLoader

if TYPE_CHECKING:
    import asyncio

    from jobify import Jobify, OuterContext, ScheduleBuilder
    from jobify._internal.inspection import FuncSpec
    from jobify._internal.task_tracker import TaskTracker

__all__ = (
    "DECLARED_CRON_SUFFIX",
    "AtArguments",
    "CronArguments",
    "PushArguments",
    "RemoteJob",
    "RootRoute",
    "app_is_started",
    "build_job_context",
    "extended_encode",
    "finish_job",
    "func_spec_of",
    "has_default_dumper",
    "has_default_loader",
    "install_hooks",
    "make_remote",
    "route_by_name",
    "run_inner_chain",
    "tracker_of",
)

DECLARED_CRON_SUFFIX: Final[str] = PATCH_CRON_DEF_ID

PublishTerminal: TypeAlias = Callable[["OuterContext"], Awaitable["asyncio.Handle"]]


class RemoteJob(Job[Any]):
    """A Jobify ``Job`` whose run happens in a Celery worker.

    The producer's ``Job`` objects are switched to this class once their
    message is published. It keeps Jobify's behaviour and adds the two
    things a remote run needs: ``wait()`` refuses to hang when no result
    can ever arrive, and ``cancel()`` also revokes the Celery task.
    """

    __slots__ = ()

    async def wait(self) -> None:
        """Wait until the worker's result reaches this producer."""
        handle = self._handle
        check = getattr(handle, "check_waitable", None)
        if check is not None:
            check()
        await super().wait()

    async def cancel(self) -> None:
        """Revoke the Celery task, then cancel the job as Jobify does."""
        handle = self._handle
        revoke = getattr(handle, "revoke", None)
        if revoke is not None and not self.is_done():
            revoke()
        await super().cancel()


def make_remote(job: Job[Any]) -> RemoteJob:
    """Turn a ``Job`` built by Jobify's scheduler into a ``RemoteJob``.

    ``Job`` has ``__slots__`` and ``RemoteJob`` adds none, so the switch of
    class keeps the object, its identity and its state: the ``Job`` the
    caller of ``push()`` holds is this very object.
    """
    job.__class__ = RemoteJob
    return cast("RemoteJob", job)


def install_hooks(app: Jobify, terminal: PublishTerminal) -> None:
    """Make the outer chain publish, and start no local timer at startup.

    Jobify builds each route's outer chain at startup from
    ``app._schedule``; an instance attribute of the same name takes its
    place. ``app._restore_schedules`` would arm local timers for declared
    crons and for schedules kept in Jobify's storage: with Celery, beat fires
    crons and the broker keeps pending jobs, so it is replaced by a step that
    only drops Jobify's bookkeeping of declared crons (beat reads them from
    the routes' options).
    """

    async def restore_nothing() -> None:
        app.state.pop(CRONS_DEF_KEY, None)

    app_dict = vars(app)
    app_dict["_schedule"] = terminal
    app_dict["_restore_schedules"] = restore_nothing


def app_is_started(app: Jobify) -> bool:
    """Tell whether ``app.startup()`` has run and ``shutdown()`` has not."""
    return bool(app.configs.app_started)


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


def run_inner_chain(builder: ScheduleBuilder[Any], context: JobContext) -> Awaitable[Any]:
    """Run the route's inner chain (user middleware, retry, handlers, timeout)."""
    return builder._chain_middleware(context)  # noqa: SLF001
