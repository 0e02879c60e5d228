"""Ending the bridge's own asyncio tasks within a bound.

A task the bridge runs (a result watcher, a publisher connection) is asked to
stop by a flag its loop checks; ``stop_task`` then waits for it. Only when it
has not ended within half the bound is it cancelled, and the wait for the
cancel is bounded too: a library call that swallows a cancellation leaves the
task behind (logged) instead of holding the caller forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ("stop_task",)

logger = logging.getLogger("jobify_celery")


async def stop_task(
    task: asyncio.Future[Any] | None,
    limit: float,
    what: str,
    *,
    cancel: bool = True,
) -> bool:
    """Wait up to ``limit`` seconds for ``task`` to end; tell whether it did.

    With ``cancel``, a task still running after half the bound is cancelled
    and given the other half. A task left running is logged, never awaited.
    """
    if task is None:
        return True
    if not task.done():
        first = limit / 2 if cancel else limit
        await asyncio.wait({task}, timeout=first)
    if not task.done() and cancel:
        task.cancel()
        await asyncio.wait({task}, timeout=limit - limit / 2)
    if not task.done():
        logger.warning("%s did not stop within %.1f s; left behind", what.capitalize(), limit)
        return False
    if not task.cancelled():
        # Retrieved here, so asyncio does not report it as never retrieved.
        error = task.exception()
        if error is not None:
            logger.debug("%s ended with an error", what.capitalize(), exc_info=error)
    return True
