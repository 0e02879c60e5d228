"""Round trip: sequential push -> await vs apply_async -> get, Redis backend.

    python -m benchmarks.roundtrip [--jobs 1000] [--app both] [--quick]

A prefork -c 2 worker per system (plain Celery, jobify-celery), all running;
jobs alternate one by one, so machine-level stalls hit every side alike.
``--app realistic`` (or ``both``, the default) adds the realistic pair
(``benchmarks.realistic``: an order dataclass through two outer middlewares,
an inner one, lifespan state, a Redis ``INCR``, a dataclass result) beside
plain Celery doing the same work with the tenant in a header.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from typing import TYPE_CHECKING

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain, realistic, realistic_plain
from benchmarks._worker import delete_queue, percentile, running_worker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

#: Each side: its Celery app, ``celery -A`` path and queue.
WORKERS = {
    "celery": (plain.celery_app, "benchmarks.plain:celery_app", plain.QUEUE),
    "jobify": (apps.celery_app, "benchmarks.apps:celery_app", apps.QUEUE),
    "celery realistic": (
        realistic_plain.plain_app,
        "benchmarks.realistic_plain:plain_app",
        realistic_plain.PLAIN_QUEUE,
    ),
    "jobify realistic": (realistic.celery_app, "benchmarks.realistic:celery_app", realistic.QUEUE),
}


async def _jobify_add() -> None:
    await (await apps.jobify_add.push(1, 2))


async def _jobify_order() -> None:
    await (await realistic.place.push(realistic_plain.ORDER))


#: The jobify-celery sides, awaited on the loop.
PUSHES: dict[str, Callable[[], Awaitable[None]]] = {
    "jobify": _jobify_add,
    "jobify realistic": _jobify_order,
}
#: The plain Celery sides, called (and timed) on the loop's thread, as the
#: blocking calls they are: a hop to another thread would add to their times.
CALLS: dict[str, Callable[[], object]] = {
    "celery": lambda: plain.plain_add.delay(1, 2).get(timeout=30),
    "celery realistic": lambda: realistic_plain.plain_publish().get(timeout=30),
}


async def measure(sides: list[str], n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {side: [] for side in sides}
    async with contextlib.AsyncExitStack() as stack:
        if "jobify" in sides:
            await stack.enter_async_context(apps.app)
        if "jobify realistic" in sides:
            await stack.enter_async_context(realistic.app)
        rounds = -1  # the first round warms up: connections, queues, subscriptions
        while rounds < n:
            for side in sides:
                started = time.perf_counter()
                if side in PUSHES:
                    await PUSHES[side]()
                else:
                    CALLS[side]()
                if rounds >= 0:
                    times[side].append((time.perf_counter() - started) * 1000)
            rounds += 1
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--app", choices=("bare", "realistic", "both"), default="both")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 200 if args.quick else args.jobs
    sides = (["celery", "jobify"] if args.app != "realistic" else []) + (
        ["celery realistic", "jobify realistic"] if args.app != "bare" else []
    )
    try:
        with contextlib.ExitStack() as stack:
            for side in sides:
                celery_app, path, queue = WORKERS[side]
                stack.enter_context(running_worker(celery_app, queue, app_path=path))
            times = asyncio.run(measure(sides, n))
    finally:
        for side in sides:
            celery_app, _, queue = WORKERS[side]
            delete_queue(celery_app, queue)
        realistic_plain.cleanup()
    p50 = {k: statistics.median(v) for k, v in times.items()}
    p99 = {k: percentile(v, 0.99) for k, v in times.items()}
    print(f"round trip: {n} sequential jobs each, prefork -c 2, RabbitMQ + Redis")
    for name in sides:
        print(f"  {name:17} p50 {p50[name]:6.2f} ms   p99 {p99[name]:6.2f} ms")
    for suffix in ("", " realistic"):
        celery, jobify = "celery" + suffix, "jobify" + suffix
        if celery in p50:
            print(
                f"  {'bare' if not suffix else 'realistic'}: p50 difference "
                f"{p50[jobify] - p50[celery]:+.2f} ms (goal <= +1 ms); "
                f"p99 ratio {p99[jobify] / p99[celery]:.2f} (goal <= 1.2)"
            )


if __name__ == "__main__":
    main()
