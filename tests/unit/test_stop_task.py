"""``stop_task`` never waits past its bound, whatever the task does with a cancel."""

from __future__ import annotations

import asyncio
import time

from jobify_celery._tasks import stop_task


async def _swallowing_cancels(stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            continue  # what a library that eats a cancel does


def test_a_task_that_ends_by_itself_is_just_awaited() -> None:
    async def scenario() -> tuple[bool, bool]:
        task = asyncio.ensure_future(asyncio.sleep(0.01))
        stopped = await stop_task(task, 1.0, "a sleeper")
        return stopped, task.cancelled()

    assert asyncio.run(scenario()) == (True, False)


def test_a_task_that_swallows_its_cancel_is_left_behind_within_the_bound() -> None:
    async def scenario() -> tuple[bool, float]:
        stop = asyncio.Event()
        task = asyncio.ensure_future(_swallowing_cancels(stop))
        started = time.monotonic()
        stopped = await stop_task(task, 0.4, "a stubborn task")
        elapsed = time.monotonic() - started
        stop.set()
        await task
        return stopped, elapsed

    stopped, elapsed = asyncio.run(scenario())
    assert stopped is False
    assert 0.35 <= elapsed < 0.6


def test_a_task_that_honours_its_cancel_is_cancelled_after_half_the_bound() -> None:
    async def scenario() -> tuple[bool, bool, float]:
        task = asyncio.ensure_future(asyncio.sleep(30))
        started = time.monotonic()
        stopped = await stop_task(task, 0.4, "a long sleeper")
        return stopped, task.cancelled(), time.monotonic() - started

    stopped, cancelled, elapsed = asyncio.run(scenario())
    assert (stopped, cancelled) == (True, True)
    assert 0.15 <= elapsed < 0.4


def test_without_cancel_the_whole_bound_is_waited_and_the_task_kept() -> None:
    async def scenario() -> tuple[bool, bool]:
        task = asyncio.ensure_future(asyncio.sleep(30))
        stopped = await stop_task(task, 0.2, "a kept task", cancel=False)
        kept = not task.done()
        task.cancel()
        return stopped, kept

    assert asyncio.run(scenario()) == (False, True)
