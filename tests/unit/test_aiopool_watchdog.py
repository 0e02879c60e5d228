"""The asyncio pool's watchdog names the job that holds the loop."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from jobify_celery._aiopool._watchdog import LoopWatchdog, job_in_stack

if TYPE_CHECKING:
    import pytest

# A stand-in for the executor's frame: the watchdog looks for a function named
# _execute in a file named *_worker.py, with the task's name and request.
_EXECUTOR_SOURCE = """
def _execute(name, request, hold):
    hold()
"""
_namespace: dict[str, Any] = {}
exec(compile(_EXECUTOR_SOURCE, "fake/_worker.py", "exec"), _namespace)  # noqa: S102
_execute = _namespace["_execute"]


class _Request:
    id = "task-id-1"


def test_a_blocked_loop_is_reported_with_the_job_and_then_how_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    watchdog = LoopWatchdog(loop, threshold=0.2, interval=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="jobify_celery.worker"):
            watchdog.start()
            time.sleep(0.2)
            loop.call_soon_threadsafe(_execute, "shop.crunch", _Request(), lambda: time.sleep(0.8))
            time.sleep(1.3)
    finally:
        watchdog.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    messages = [record.getMessage() for record in caplog.records]
    blocked = [m for m in messages if "has been blocked" in m]
    assert len(blocked) == 1
    assert "job shop.crunch[task-id-1]" in blocked[0]
    assert any("was blocked for" in m and "in all" in m for m in messages)


def test_a_stack_without_a_job_is_described_as_the_loops_own_code() -> None:
    assert job_in_stack(sys._getframe()).startswith("no job of this pool")
    assert job_in_stack(None) == "no job of this pool (the loop's own code)"
