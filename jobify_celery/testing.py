"""Test a bridged app the way Celery users test theirs.

Three helpers, each usable on its own:

* :class:`InProcessWorker`: a real Celery worker in a thread of the test
  process (Celery's ``start_worker``), on any pool (``"solo"``, ``"threads"``,
  ``"asyncio"``). ``with`` from sync code; ``async with`` from a coroutine,
  which starts and stops it on a thread so the event loop (where the app's
  jobs may run) keeps going. It stops within a second instead of Celery's up
  to ten: it wakes the worker's own loop at exit.
* :class:`AppThread`: the Jobify app started on an event loop in a background
  thread, for sync test code: ``producer.run(task.push(...))``.
* :func:`eager`: ``task_always_eager`` for the duration of a block: a push runs
  its job in the test's process, through both middleware chains, without a
  broker.

With pytest, ``pytest_plugins = ("jobify_celery.testing",)`` in a
``conftest.py`` adds the fixtures ``jobify_producer`` and ``jobify_worker``
for the app the ``jobify_app`` fixture (yours) returns; ``jobify_worker_options``
(yours too, if you like) says which pool. Both are session-scoped: Jobify starts
an app with routers once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from jobify_celery._bridge import bridge_of_app

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator
    from types import TracebackType

    from celery import Celery
    from celery.worker import WorkController
    from jobify import Jobify

__all__ = ("AppThread", "InProcessWorker", "eager")

T = TypeVar("T")

#: What ``pool="asyncio"`` means to Celery.
_ASYNCIO_POOL: Final = "jobify_celery.pool:AsyncioPool"


class InProcessWorker:
    """A Celery worker running in a thread of this process, for tests.

    ``celery_app`` is the Celery app (or the bridged Jobify app). The worker
    consumes the app's queues; ``pool`` is ``"threads"`` (default), ``"solo"``
    or ``"asyncio"``; other keyword arguments go to Celery's ``start_worker``
    (``concurrency``, ``queues``, ``loglevel``, ...). Entering returns
    Celery's ``WorkController`` once the worker consumes.

    Start the Jobify app before the worker when both run in the process
    (``async with app:`` or :class:`AppThread` first): the worker's jobs then
    run on the app's loop.
    """

    def __init__(
        self,
        celery_app: Celery | Jobify,
        *,
        pool: str = "threads",
        concurrency: int | None = None,
        shutdown_timeout: float = 30.0,
        **options: Any,  # noqa: ANN401
    ) -> None:
        self.celery_app = _celery_app_of(celery_app)
        if pool == "prefork":
            msg = (
                "InProcessWorker(pool='prefork') would fork the test process; test with "
                "'threads', 'solo' or 'asyncio', or start a `celery worker` process."
            )
            raise ValueError(msg)
        self.pool = _ASYNCIO_POOL if pool == "asyncio" else pool
        if concurrency is None:
            concurrency = {"solo": 1, _ASYNCIO_POOL: 100}.get(self.pool, 4)
        self.hostname = f"jobify-test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        self._options = {
            "pool": self.pool,
            "concurrency": concurrency,
            "shutdown_timeout": shutdown_timeout,
            "perform_ping_check": False,
            "loglevel": "WARNING",
            "hostname": self.hostname,
            **options,
        }
        self._running: contextlib.AbstractContextManager[WorkController] | None = None

    def __enter__(self) -> WorkController:
        from celery.contrib.testing.worker import start_worker  # noqa: PLC0415

        if self._running is not None:
            msg = "this InProcessWorker is running already"
            raise RuntimeError(msg)
        running = start_worker(self.celery_app, **self._options)
        worker = running.__enter__()
        self._running = running
        return worker

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        from celery.worker import state  # noqa: PLC0415

        # What start_worker does on exit, and then a message to the worker so
        # its loop (idle in a poll of up to 10 s) sees it at once.
        state.should_terminate = 0
        with contextlib.suppress(Exception):
            self.celery_app.control.ping(destination=[self.hostname], timeout=0.01)
        running.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> WorkController:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)


class AppThread:
    """The Jobify app started on an event loop of its own thread, for sync test code.

    ``with AppThread(app) as producer: producer.run(task.push(1))``: the app
    starts (lifespan entered) on enter and shuts down on exit.
    """

    def __init__(self, app: Jobify, *, timeout: float = 60.0) -> None:
        self.app = app
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="jobify-test-app", daemon=True
        )

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the app's loop and return its result (or raise its error)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except TimeoutError:
            future.cancel()
            raise

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            self.run(self.app.startup())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.run(self.app.shutdown())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(self.timeout)
        if not self.loop.is_running():
            self.loop.close()


@contextlib.contextmanager
def eager(celery_app: Celery | Jobify, *, store_results: bool = False) -> Iterator[None]:
    """Run every job at once in this process (``task_always_eager``) within the block.

    A push runs its job through the outer and inner middleware and returns
    once it has ended; ``await job`` gives its result or raises its error.
    ``store_results`` also stores them in the result backend, as Celery's
    ``task_store_eager_result`` does.
    """
    conf = _celery_app_of(celery_app).conf
    before = (conf.task_always_eager, conf.task_store_eager_result)
    conf.task_always_eager, conf.task_store_eager_result = True, store_results
    try:
        yield
    finally:
        conf.task_always_eager, conf.task_store_eager_result = before


def _celery_app_of(app: Any) -> Celery:  # noqa: ANN401
    from celery import Celery  # noqa: PLC0415

    if isinstance(app, Celery):
        return app
    bridge = bridge_of_app(app)
    if bridge is None:
        msg = (
            f"expected a Celery app or a Jobify app bound with JobifyCelery, got "
            f"{type(app).__name__} {app!r}"
        )
        raise TypeError(msg)
    return bridge.celery_app


# -- pytest fixtures (``pytest_plugins = ("jobify_celery.testing",)``) ----------

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pass
else:

    @pytest.fixture(scope="session")
    def jobify_app() -> Jobify:
        """Your bridged Jobify app: override this fixture in your ``conftest.py``."""
        msg = (
            "jobify_celery.testing needs your app: define a session-scoped fixture "
            "named 'jobify_app' that returns the Jobify app bound with JobifyCelery"
        )
        raise pytest.UsageError(msg)

    @pytest.fixture(scope="session")
    def jobify_worker_options() -> dict[str, Any]:
        """Keyword arguments of the session's ``InProcessWorker`` (override to change)."""
        return {"pool": os.environ.get("JOBIFY_TEST_POOL", "threads")}

    @pytest.fixture(scope="session")
    def jobify_producer(jobify_app: Jobify) -> Iterator[AppThread]:
        """Start the app for the session on a loop thread: ``jobify_producer.run(coro)``."""
        with AppThread(jobify_app) as producer:
            yield producer

    @pytest.fixture(scope="session")
    def jobify_worker(
        jobify_app: Jobify,
        jobify_producer: AppThread,
        jobify_worker_options: dict[str, Any],
    ) -> Iterator[WorkController]:
        """Run a worker in this process for the app's queues, once the app has started."""
        del jobify_producer  # started first: the worker's jobs run on its loop
        with InProcessWorker(jobify_app, **jobify_worker_options) as worker:
            yield worker
