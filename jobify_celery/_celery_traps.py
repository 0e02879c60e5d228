"""Celery settings that lose work with some pools, adjusted where the user did not choose.

A worker on the threads pool (the asyncio pool too: both run several jobs in
one process) that loses its broker connection while jobs run
lowers its prefetch count by the number of those jobs and is meant to raise it
again as they finish (``worker_enable_prefetch_count_reduction``). With the
threads pool the count is never raised again: the worker stops consuming for
good and ignores SIGTERM (measured here with plain Celery 5.7, too;
``tests/faults`` has the test). The bridge turns the reduction off for such
workers, unless the setting was chosen explicitly.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from celery.concurrency.thread import TaskPool as ThreadsPool

__all__ = ("PREFETCH_REDUCTION", "keep_prefetch_after_reconnect")

logger = logging.getLogger("jobify_celery.worker")

PREFETCH_REDUCTION: Final = "worker_enable_prefetch_count_reduction"


def keep_prefetch_after_reconnect(conf: Any, pool: Any) -> bool:  # noqa: ANN401
    """Turn off the prefetch reduction for a threads or asyncio pool; tell whether it changed."""
    from jobify_celery._aiopool import AsyncioPool  # noqa: PLC0415

    if not isinstance(pool, (ThreadsPool, AsyncioPool)) or _chosen(conf, PREFETCH_REDUCTION):
        return False
    if not conf.get(PREFETCH_REDUCTION, True):
        return False
    conf[PREFETCH_REDUCTION] = False
    logger.info(
        "%s set to False for this %s worker: with it, a lost broker "
        "connection stops consumption for good. Set it yourself to choose.",
        PREFETCH_REDUCTION,
        type(pool).__name__,
    )
    return True


def _chosen(conf: Any, key: str) -> bool:  # noqa: ANN401
    """Tell whether ``key`` was set by the user (anywhere but Celery's defaults)."""
    maps = getattr(conf, "maps", None)
    if not maps:
        return False
    return any(key in layer for layer in maps[:-1])
