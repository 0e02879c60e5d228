"""The greenlet bridge of the asyncio pool: sync code that waits on the loop."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from jobify_celery._aiopool._green import (
    await_only,
    in_job_greenlet,
    run_in_greenlet,
    start_in_greenlet,
)

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


async def run(body: Callable[..., T], *args: Any) -> T:
    """Run ``body(*args)`` in a job greenlet, as the pool does, and wait for it."""
    return await start_in_greenlet(lambda context: run_in_greenlet(body, *args, context=context))


def test_sync_code_awaits_and_gets_values_back() -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    def body(n: int) -> tuple[int, bool]:
        return await_only(double(n)) + await_only(double(1)), in_job_greenlet()

    assert asyncio.run(run(body, 20)) == (42, True)
    assert not in_job_greenlet()


def test_an_awaited_error_is_raised_inside_and_can_be_caught() -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise LookupError("gone")

    def body() -> str:
        try:
            await_only(fail())
        except LookupError as exc:
            return f"caught {exc}"
        return "not raised"

    assert asyncio.run(run(body)) == "caught gone"


def test_an_error_left_uncaught_reaches_the_caller() -> None:
    def body() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        asyncio.run(run(body))


def test_await_only_outside_a_job_greenlet_is_refused() -> None:
    async def nothing() -> None:
        return None

    coro = nothing()
    with pytest.raises(RuntimeError, match="outside a job greenlet"):
        await_only(coro)
    coro.close()


def test_the_greenlet_and_its_task_share_one_context_of_their_own() -> None:
    async def read() -> str:
        return SEEN.get()

    def body() -> str:
        SEEN.set("set by a signal handler")
        return await_only(read())

    async def main() -> tuple[tuple[str, str], str]:
        inside = await start_in_greenlet(lambda context: _job_and_read(body, context))
        return inside, SEEN.get()

    (in_job, on_task), after = asyncio.run(main())
    assert in_job == "set by a signal handler"  # the job's coroutine sees it
    assert on_task == "set by a signal handler"  # so does the task driving the greenlet
    assert after == "unset"  # nothing leaks to the caller's context


async def _job_and_read(body: Callable[[], str], context: contextvars.Context) -> tuple[str, str]:
    seen_inside = await run_in_greenlet(body, context=context)
    return seen_inside, SEEN.get()


def test_a_coroutine_awaited_from_the_greenlet_runs_on_the_driving_task() -> None:
    async def which() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    def body() -> asyncio.Task[Any] | None:
        return await_only(which())

    async def main() -> bool:
        task = start_in_greenlet(lambda context: run_in_greenlet(body, context=context))
        return await task is task

    assert asyncio.run(main())  # no task of its own per await


def test_many_jobs_wait_at_once_on_one_loop() -> None:
    def body() -> None:
        await_only(asyncio.sleep(0.1))

    async def main() -> None:
        await asyncio.gather(*(run(body) for _ in range(500)))

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2.0  # not 500 x 0.1 s
