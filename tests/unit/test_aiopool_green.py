"""The greenlet bridge of the asyncio pool: sync code that waits on the loop."""

from __future__ import annotations

import asyncio
import contextvars
import time

import pytest

from jobify_celery._aiopool._green import await_only, in_job_greenlet, run_in_greenlet

SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


def test_sync_code_awaits_and_gets_values_back() -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    def body(n: int) -> tuple[int, bool]:
        return await_only(double(n)) + await_only(double(1)), in_job_greenlet()

    assert asyncio.run(run_in_greenlet(body, 20)) == (42, True)
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

    assert asyncio.run(run_in_greenlet(body)) == "caught gone"


def test_an_error_left_uncaught_reaches_the_caller() -> None:
    def body() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        asyncio.run(run_in_greenlet(body))


def test_await_only_outside_a_job_greenlet_is_refused() -> None:
    async def nothing() -> None:
        return None

    coro = nothing()
    with pytest.raises(RuntimeError, match="outside a job greenlet"):
        await_only(coro)
    coro.close()


def test_a_coroutine_run_in_the_job_context_sees_what_the_sync_code_set() -> None:
    async def read() -> str:
        return SEEN.get()

    def body() -> tuple[str, str]:
        SEEN.set("set by a signal handler")
        return await_only(read(), in_job_context=True), await_only(read())

    async def main() -> tuple[tuple[str, str], str]:
        inside = await run_in_greenlet(body)
        return inside, SEEN.get()

    (in_context, on_driver), after = asyncio.run(main())
    assert in_context == "set by a signal handler"
    assert on_driver == "unset"  # other awaits run on the driving task as they are
    assert after == "unset"  # nothing leaks to the caller's context


def test_many_jobs_wait_at_once_on_one_loop() -> None:
    def body() -> None:
        await_only(asyncio.sleep(0.1))

    async def main() -> None:
        await asyncio.gather(*(run_in_greenlet(body) for _ in range(500)))

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2.0  # not 500 x 0.1 s
