"""What the asyncio pool keeps per job, and how it ends one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobify_celery._aiopool._jobs import Ending, PoolJob, current_pool_job, enter_pool_job
from jobify_celery._aiopool._pool import AsyncioPool, _settleable


def test_ending_a_job_cancels_its_task_and_keeps_the_first_reason() -> None:
    async def main() -> tuple[bool, Ending | None]:
        job = PoolJob("id-1", "tally.work")
        job.task = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        job.end(Ending.SOFT_LIMIT)
        job.end(Ending.SHUTDOWN)
        with pytest.raises(asyncio.CancelledError):
            await job.task
        return job.task.cancelled(), job.ending

    assert asyncio.run(main()) == (True, Ending.SOFT_LIMIT)


def test_a_job_not_started_yet_only_records_why_it_ends() -> None:
    job = PoolJob("id-2", "tally.work")
    job.end(Ending.TERMINATED)
    assert job.ending is Ending.TERMINATED


def test_the_current_job_is_per_context() -> None:
    job = PoolJob("id-3", "tally.work")
    assert current_pool_job() is None
    token = enter_pool_job(job)
    try:
        assert current_pool_job() is job
    finally:
        token.var.reset(token)
    assert current_pool_job() is None


class _Channel:
    def __init__(self, *, is_open: bool) -> None:
        self.is_open = is_open


class _Message:
    def __init__(self, channel: _Channel) -> None:
        self.channel = channel


class _Request:
    def __init__(self, *, is_open: bool = True) -> None:
        self.message = _Message(_Channel(is_open=is_open))
        self.failures: list[Any] = []

    def on_accepted(self, *_: Any) -> None:
        return None

    def on_success(self, *_: Any) -> None:
        return None

    def on_failure(self, exc_info: Any, *, return_ok: bool = False) -> None:
        self.failures.append((exc_info.type, return_ok))


def test_a_message_whose_channel_closed_cannot_be_settled() -> None:
    assert _settleable(_Request().on_accepted)
    assert not _settleable(_Request(is_open=False).on_accepted)
    assert _settleable(None)


def test_a_job_that_breaks_out_of_the_tracer_fails_through_its_request() -> None:
    request = _Request()
    job = PoolJob("id-4", "tally.work")

    def tracer() -> None:
        raise KeyError("tally.work")

    try:
        tracer()
    except KeyError:
        AsyncioPool._fail(job, request.on_success)
    assert request.failures == [(KeyError, False)]


def test_a_job_past_its_hard_limit_is_not_reported_twice() -> None:
    request = _Request()
    job = PoolJob("id-5", "tally.work")
    job.end(Ending.HARD_LIMIT)

    def tracer() -> None:
        raise asyncio.CancelledError

    try:
        tracer()
    except asyncio.CancelledError:
        AsyncioPool._fail(job, request.on_success)
    assert request.failures == []
