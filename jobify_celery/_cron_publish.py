"""Publish the runs beat fires: built by Celery, sent together, kept while the broker is away.

Celery builds each run's message (``_capture``: its routing, headers and
publish signals, on beat's thread, as ``apply_async`` would); the bridge's
sender (``_senders``: an asyncio AMQP client for RabbitMQ) then sends a
tick's runs from the loop in one go, as a producer's pushes go, instead of
one blocking kombu publish after another. A second on which 10,000 crons
fall due would otherwise take seconds to publish.

Runs are sent in the order given (planned time). A run the broker could not
be reached for is not lost: it waits, with those after it, and goes first at
the next try. Its cron's state already says it was fired, so no other beat
fires it again; only a beat that stops meanwhile loses it (logged). A run the
broker refuses, or that may have reached it, is logged and not sent again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from jobify_celery._capture import Capture
from jobify_celery._errors import PublishError
from jobify_celery._senders import Attempt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from datetime import datetime

    from celery import Celery, Task

    from jobify_celery._capture import Outgoing
    from jobify_celery._senders import Sender

__all__ = ("CronRun", "RunPublisher")

logger = logging.getLogger("jobify_celery.beat")

#: With publisher confirms, runs whose confirmations are awaited together.
_CONFIRM_WINDOW: Final = 500
#: Runs kept while the broker cannot be reached, at most (beyond, the oldest are dropped).
_MAX_UNSENT: Final = 100_000
#: How long unsent runs wait before the next try.
_RETRY_EVERY: Final = 5.0
#: How long closing waits for publishes in flight and the broker connection.
_CLOSE_GRACE: Final = 1.0


class CronRun(NamedTuple):
    """One run of a cron, with the messages that publish it."""

    job_id: str
    run: int
    planned: datetime
    task_id: str
    messages: list[Outgoing]


class RunPublisher:
    """Builds runs' messages with Celery and sends them in order through one sender."""

    def __init__(
        self,
        celery_app: Celery,
        sender: Sender,
        *,
        confirms: bool,
        run: Callable[[Awaitable[Any]], Any],
    ) -> None:
        self._capture = Capture(celery_app)
        self._sender = sender
        self._confirms = confirms
        self._run = run
        #: Runs fired while the broker could not be reached, oldest first.
        self._unsent: collections.deque[CronRun] = collections.deque()
        self._next_try = 0.0

    def messages(
        self,
        task: Task,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        task_id: str,
        headers: dict[str, Any],
    ) -> list[Outgoing]:
        """Return what ``task.apply_async`` would publish for one run."""
        return self._capture.messages(task, args, kwargs, task_id=task_id, headers=headers)

    @property
    def retry_due(self) -> bool:
        """Tell whether runs wait for the broker and it is time to try again."""
        return bool(self._unsent) and time.monotonic() >= self._next_try

    def publish(self, runs: Sequence[CronRun]) -> None:
        """Send the runs still unsent, then ``runs``, in order (blocks until done)."""
        waited = len(self._unsent)
        queued = [*self._unsent, *runs]
        self._unsent.clear()
        if not queued:
            return
        left: list[CronRun] = self._run(self._send(queued))
        if left:
            self._keep(left)
        elif waited:
            logger.info("Published %d cron run(s) that waited for the broker", waited)

    def close(self) -> None:
        """Log the runs still unsent as lost; close the broker connection."""
        for run in self._unsent:
            log_lost(run.job_id, run.run, run.planned, "beat stopped before the broker came back")
        self._unsent.clear()
        try:
            self._run(self._sender.close(_CLOSE_GRACE))
        except Exception:  # closing goes on (the broker may be away)
            logger.warning("Closing beat's broker connection failed", exc_info=True)

    def _keep(self, runs: Sequence[CronRun]) -> None:
        dropped = len(runs) - _MAX_UNSENT
        if dropped > 0:
            for run in runs[:dropped]:
                log_lost(run.job_id, run.run, run.planned, "too many runs wait for the broker")
            runs = runs[dropped:]
        self._unsent.extend(runs)
        self._next_try = time.monotonic() + _RETRY_EVERY
        logger.warning(
            "The broker cannot be reached: %d cron run(s) wait to be published, "
            "the oldest planned %s; trying again in %.0f s",
            len(self._unsent),
            self._unsent[0].planned.isoformat(),
            _RETRY_EVERY,
        )

    async def _send_one(self, run: CronRun) -> bool:
        """Send one run; tell False if it should be tried again later."""
        try:
            await self._sender.send(run.messages, run.task_id, Attempt())
        except PublishError as exc:
            if not exc.maybe_sent and not exc.refused:
                return False
            log_lost(run.job_id, run.run, run.planned, str(exc))
        except Exception:  # noqa: BLE001 - as Celery's beat does: log, go on
            log_lost(run.job_id, run.run, run.planned)
        return True

    async def _send(self, runs: Sequence[CronRun]) -> list[CronRun]:
        """Send ``runs`` in order; return those left unsent (the broker is unreachable)."""
        if not self._confirms:
            # Each send returns once its message is written to the connection.
            for index, run in enumerate(runs):
                if not await self._send_one(run):
                    return list(runs[index:])
            return []
        start = 0
        declared: set[tuple[int, ...]] = set()
        for window in _windows(runs, declared):
            sent = await asyncio.gather(*(self._send_one(run) for run in window))
            if not all(sent):
                unsent = [run for run, ok in zip(window, sent, strict=True) if not ok]
                return [*unsent, *runs[start + len(window) :]]
            start += len(window)
        return []


def _windows(runs: Sequence[CronRun], declared: set[tuple[int, ...]]) -> list[Sequence[CronRun]]:
    """Split ``runs`` into windows whose confirmations can be awaited together.

    The first run for each set of entities to declare goes alone, so that
    the declarations are made (and cached by the sender) before a window's
    publishes, which then leave in order.
    """
    keys = [_declares(run) for run in runs]
    windows: list[Sequence[CronRun]] = []
    start = 0
    while start < len(runs):
        if keys[start] not in declared:
            declared.add(keys[start])
            windows.append(runs[start : start + 1])
            start += 1
            continue
        end = start + 1
        while end < len(runs) and end - start < _CONFIRM_WINDOW and keys[end] in declared:
            end += 1
        windows.append(runs[start:end])
        start = end
    return windows


def _declares(run: CronRun) -> tuple[int, ...]:
    return tuple(id(entity) for message in run.messages for entity in message.declare)


def log_lost(job_id: str, run: int, planned: datetime, reason: str | None = None) -> None:
    """Log a run that could not be published (with the exception being handled, if no reason)."""
    logger.error(
        "Cron %r: run %d (planned %s) could not be published and is lost%s",
        job_id,
        run,
        planned.isoformat(),
        f": {reason}" if reason else "",
        exc_info=reason is None,
    )
