"""The worker follows a job for a cancel only once it has run a while."""

from __future__ import annotations

import asyncio

from jobify_celery._worker import _CANCEL_WATCH_AFTER, _CancelWatch, _LongRunning


class _ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test moves it."""

    now = 1000.0

    def time(self) -> float:
        return self.now


def _spin(loop: asyncio.AbstractEventLoop) -> None:
    """Run the callbacks and the timers that are due now."""
    loop.run_until_complete(asyncio.sleep(0))


def test_only_jobs_running_past_the_threshold_are_handed_over_oldest_first() -> None:
    loop = _ManualClockLoop()
    handed: list[str] = []
    running = _LongRunning(lambda watch: handed.append(watch.task_id))
    start = loop.now
    try:
        for task_id in ("short", "slow", "slower"):
            running.add(_CancelWatch(None, task_id, start), loop)
        short = next(w for w in running._jobs if w.task_id == "short")
        loop.now = start + _CANCEL_WATCH_AFTER / 2
        running.discard(short)
        running.add(_CancelWatch(None, "late", loop.now), loop)
        _spin(loop)
        assert handed == []

        loop.now = start + _CANCEL_WATCH_AFTER + 0.01
        _spin(loop)
        assert handed == ["slow", "slower"]

        loop.now = start + _CANCEL_WATCH_AFTER * 1.5 + 0.01
        _spin(loop)
        assert handed == ["slow", "slower", "late"]
        # Nothing left to follow: no timer stays armed.
        assert running._timer is None
    finally:
        loop.close()


def test_a_new_loop_starts_afresh() -> None:
    old, new = _ManualClockLoop(), _ManualClockLoop()
    handed: list[str] = []
    running = _LongRunning(lambda watch: handed.append(watch.task_id))
    try:
        running.add(_CancelWatch(None, "on-old", old.now), old)
        running.add(_CancelWatch(None, "on-new", new.now), new)
        new.now += _CANCEL_WATCH_AFTER + 0.01
        _spin(new)
        assert handed == ["on-new"]
    finally:
        old.close()
        new.close()
