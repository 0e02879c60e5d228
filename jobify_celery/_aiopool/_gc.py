"""The asyncio pool's settings for Python's garbage collector.

A worker with hundreds of jobs in flight holds many objects that live for a
fraction of a second to seconds: the prefetched messages and their Celery
requests, each job's task, coroutine and greenlet. Python's collector, with
its default thresholds, collects the young generations every 700
allocations and promotes those objects to the old generation, where they die
and set off full collections that walk the whole heap: measured on this
project's benchmark (10,000 queued 50 ms jobs, ``-c 1000``), 15 full
collections of 50-110 ms each, and a quarter of the worker's time in the
collector. Each of them also holds the event loop, so every job in flight
waits.

At the pool's start, once the app and its lifespan are up, ``tune_collector``
freezes what the heap holds then (modules, the apps, clients: ``gc.freeze``,
so full collections no longer walk it) and raises the first generation's
threshold so young objects are looked at less often. Objects frozen are
still freed when their last reference goes; only a reference cycle among
them, formed later, would never be collected.
"""

from __future__ import annotations

import gc
import logging
from typing import Final

__all__ = ("GEN0_THRESHOLD", "tune_collector")

logger = logging.getLogger("jobify_celery.worker")

#: Allocations between two collections of the youngest generation (Python: 700).
GEN0_THRESHOLD: Final = 10_000


def tune_collector() -> None:
    """Freeze the heap as it is now and collect the youngest generation less often.

    A threshold set higher than ``GEN0_THRESHOLD`` before (by the user) stays.
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(GEN0_THRESHOLD, before[0]), *before[1:])
    logger.info(
        "asyncio pool: %d objects of the start-up heap frozen; collection thresholds %s -> %s",
        gc.get_freeze_count(),
        before,
        gc.get_threshold(),
    )
