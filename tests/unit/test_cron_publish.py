"""Publishing beat's runs: in order, kept while the broker is away, refusals logged."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu.entity import Queue

from jobify_celery import _cron_publish
from jobify_celery._cron_publish import CronRun, RunPublisher
from jobify_celery._errors import PublishError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    import pytest

    from jobify_celery._capture import Outgoing
    from jobify_celery._senders import Attempt

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
QUEUE_A: Any = Queue("a")  # type: ignore[no-untyped-call]
QUEUE_B: Any = Queue("b")  # type: ignore[no-untyped-call]


class _Message:
    def __init__(self, declare: tuple[Any, ...]) -> None:
        self.declare = declare


def run(index: int, queue: Any = QUEUE_A) -> CronRun:
    message: Any = _Message((queue,))
    return CronRun(f"c{index}", 1, T0 + timedelta(seconds=index), f"t{index}", [message])


class FakeSender:
    """Records what it sends; fails the task ids it is told to, the way it is told."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.unreachable: set[str] = set()
        self.refused: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.closed = False

    async def send(self, messages: Sequence[Outgoing], job_id: str, attempt: Attempt) -> None:
        del messages, attempt
        if job_id in self.unreachable:
            msg = "the broker could not be reached within 1 s"
            raise PublishError(job_id, "amqp://x//", msg, maybe_sent=False)
        if job_id in self.refused:
            raise PublishError(job_id, "amqp://x//", "NOT_FOUND", maybe_sent=False, refused=True)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        self.sent.append(job_id)

    async def close(self, grace: float) -> None:
        del grace
        self.closed = True


def publisher(sender: FakeSender, *, confirms: bool = False) -> RunPublisher:
    def run_here(awaitable: Awaitable[Any]) -> Any:
        async def wait() -> Any:
            return await awaitable

        return asyncio.run(wait())

    return RunPublisher(Celery(set_as_current=False), sender, confirms=confirms, run=run_here)


def test_runs_are_sent_in_the_order_given() -> None:
    sender = FakeSender()
    publisher(sender).publish([run(i) for i in range(5)])
    assert sender.sent == ["t0", "t1", "t2", "t3", "t4"]


def test_runs_the_broker_could_not_take_wait_and_go_first_next_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sender = FakeSender()
    sender.unreachable = {"t2"}
    runs = publisher(sender)
    runs.publish([run(i) for i in range(5)])
    assert sender.sent == ["t0", "t1"]
    assert "3 cron run(s) wait to be published" in caplog.text
    assert not runs.retry_due  # not before the retry interval
    sender.unreachable = set()
    runs.publish([run(5)])
    assert sender.sent == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert "Published 3 cron run(s) that waited for the broker" in caplog.text
    assert "is lost" not in caplog.text


def test_a_refused_run_is_logged_lost_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = FakeSender()
    sender.refused = {"t1"}
    with caplog.at_level(logging.ERROR):
        publisher(sender).publish([run(i) for i in range(3)])
    assert sender.sent == ["t0", "t2"]
    assert "Cron 'c1': run 1" in caplog.text
    assert "could not be published and is lost: job 't1'" in caplog.text


def test_runs_still_waiting_at_close_are_logged_lost(caplog: pytest.LogCaptureFixture) -> None:
    sender = FakeSender()
    sender.unreachable = {"t0"}
    runs = publisher(sender)
    runs.publish([run(0), run(1)])
    runs.close()
    assert sender.closed
    assert caplog.text.count("beat stopped before the broker came back") == 2


def test_too_many_waiting_runs_drop_the_oldest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_cron_publish, "_MAX_UNSENT", 3)
    sender = FakeSender()
    sender.unreachable = {f"t{i}" for i in range(5)}
    publisher(sender).publish([run(i) for i in range(5)])
    assert caplog.text.count("too many runs wait for the broker") == 2
    assert "Cron 'c0'" in caplog.text
    assert "Cron 'c1'" in caplog.text


def test_with_confirms_runs_wait_in_windows_and_each_queue_is_first_declared_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cron_publish, "_CONFIRM_WINDOW", 4)
    runs = [run(0), *(run(i) for i in range(1, 6)), run(6, QUEUE_B), run(7, QUEUE_B)]
    windows = _cron_publish._windows(runs, set())
    assert [[r.task_id for r in window] for window in windows] == [
        ["t0"],
        ["t1", "t2", "t3", "t4"],
        ["t5"],
        ["t6"],
        ["t7"],
    ]
    sender = FakeSender()
    publisher(sender, confirms=True).publish(runs)
    assert sender.sent == [f"t{i}" for i in range(8)]
    assert sender.most_in_flight == 4
