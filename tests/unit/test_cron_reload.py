"""Beat's read of every stored cron: in the background, then taken in by slices."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from jobify_celery import _cron_reload
from jobify_celery._cron_feed import START
from jobify_celery._cron_reload import FullRead

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterator

    import pytest


class LoopThread:
    """A loop on a thread of its own, as beat's runtime has."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, awaitable: Awaitable[Any]) -> Future[Any]:
        async def wait() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def wait_outcome(read: FullRead) -> Any:
    for _ in range(500):
        outcome = read.outcome()
        if outcome is not None:
            return outcome
        threading.Event().wait(0.01)
    raise AssertionError("the read never ended")


async def no_records() -> list[Any]:
    return []


def never_ending(awaitable: Awaitable[Any]) -> Future[Any]:
    """A submit whose read never ends (the awaitable is dropped unstarted)."""
    awaitable.close()  # type: ignore[attr-defined]
    return Future()


def items(count: int) -> Iterator[tuple[str, Any, None]]:
    return ((f"c{index}", f"record {index}", None) for index in range(count))


def test_records_are_read_in_the_background_and_the_caller_goes_on() -> None:
    runner = LoopThread()
    release = threading.Event()

    async def slow_read() -> list[Any]:
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        return ["a", "b"]

    try:
        read = FullRead(runner.submit)
        read.start(slow_read, START, declared=True)
        assert read.reading
        assert read.active
        assert read.outcome() is None  # still reading: the caller fires meanwhile
        release.set()
        assert wait_outcome(read) == ["a", "b"]
        assert not read.reading
        assert read.declared
    finally:
        runner.close()


def test_a_failed_or_stalled_read_gives_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cron_reload, "READ_TIMEOUT", 0.05)
    runner = LoopThread()

    async def stalled() -> list[Any]:
        await asyncio.sleep(10)
        return []

    async def failing() -> list[Any]:
        raise ConnectionRefusedError("no database")

    try:
        read = FullRead(runner.submit)
        read.start(stalled, START, declared=False)
        assert isinstance(wait_outcome(read), TimeoutError)
        read.start(failing, START, declared=False)
        assert isinstance(wait_outcome(read), ConnectionRefusedError)
        assert not read.active
    finally:
        runner.close()


def test_records_are_taken_in_by_slices_skipping_crons_the_feed_announced_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = FullRead(never_ending)
    read.start(no_records, START, declared=False)
    read.touch("c3")
    read.take_in(items(10))
    taken = [job_id for job_id, _, _ in read.slice()]
    assert "c3" not in taken
    assert len(taken) == 9

    monkeypatch.setattr(_cron_reload, "_SLICE", 0.0)
    read.take_in(items(5))
    assert list(read.slice()) == []  # nothing fits in an empty slice: the rest waits
    monkeypatch.setattr(_cron_reload, "_SLICE", 1.0)
    assert [job_id for job_id, _, _ in read.slice()] == ["c0", "c1", "c2", "c4"]


def test_forgetting_drops_the_read_and_cancels_it() -> None:
    read = FullRead(never_ending)
    read.start(no_records, START, declared=False)
    pending = read._future
    assert pending is not None
    read.take_in(items(3))
    read.touch("x")
    read.forget()
    assert pending.cancelled()
    assert not read.active
    assert read.touched == set()
    read.touch("y")  # nothing under way: not noted
    assert read.touched == set()
