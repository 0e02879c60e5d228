"""Notice a job that blocks the asyncio pool's event loop, and name it.

One coroutine job that computes, or calls something synchronous, holds the
loop that all jobs of the process share. A heartbeat on the loop stamps the
time twice per ``interval``; a thread of the watchdog checks the stamp every
``interval``. When it is older than ``threshold``, the watchdog reads the loop
thread's current stack (``sys._current_frames``), finds the job in it (the
frame of the executor running it) and logs its name, id and the line it is
at; once the loop runs again it logs how long it was held in all. Nothing is
done on the hot path but the heartbeat.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import asyncio
    from types import FrameType

__all__ = ("LoopWatchdog", "job_in_stack")

logger = logging.getLogger("jobify_celery.worker")

_EXECUTOR_FRAMES: Final = frozenset({"call_async", "_execute", "__call__"})


def job_in_stack(frame: FrameType | None) -> str:
    """Describe the job a loop thread's stack runs, and where it is."""
    innermost = frame
    while frame is not None:
        code = frame.f_code
        if code.co_name in _EXECUTOR_FRAMES and code.co_filename.endswith("_worker.py"):
            local = frame.f_locals
            name = local.get("name")
            request = local.get("request")
            task_id = getattr(request, "id", None)
            if isinstance(name, str):
                return f"job {name}[{task_id}]{_where(innermost)}"
        frame = frame.f_back
    return f"no job of this pool (the loop's own code){_where(innermost)}"


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return ""
    return f" at {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


class LoopWatchdog:
    """Watches one loop from a thread of its own."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold: float = 0.5,
        interval: float = 0.1,
    ) -> None:
        self._loop = loop
        self._threshold = threshold
        self._interval = interval
        self._stamp = time.monotonic()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the heartbeat on the loop and the watching thread."""
        self._loop.call_soon_threadsafe(self._first_beat)
        self._thread = threading.Thread(
            target=self._watch, name="jobify-celery-loop-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the heartbeat stops with the loop)."""
        self._stop.set()

    def _first_beat(self) -> None:
        self._loop_thread = threading.get_ident()
        self._beat()

    def _beat(self) -> None:
        self._stamp = time.monotonic()
        if not self._stop.is_set():
            self._loop.call_later(self._interval / 2, self._beat)

    def _watch(self) -> None:
        held_since: float | None = None
        while not self._stop.wait(self._interval):
            stamp = self._stamp
            age = time.monotonic() - stamp
            if age > self._threshold and held_since is None and self._loop.is_running():
                held_since = stamp
                frame = sys._current_frames().get(self._loop_thread or 0)  # noqa: SLF001
                logger.warning(
                    "The event loop of this worker process has been blocked for %.1f s "
                    "by %s: every job of the process waits. Run blocking code in a "
                    "thread (asyncio.to_thread) or a sync function with its default "
                    "run_mode.",
                    age,
                    job_in_stack(frame),
                )
            elif held_since is not None and stamp > held_since:
                logger.warning("The event loop was blocked for %.1f s in all", stamp - held_since)
                held_since = None
