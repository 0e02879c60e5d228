"""How late a delayed job starts: jobify `delay()` beside Celery `countdown`.

    python -m benchmarks.delay_lateness [--rounds N] [--quick]

One prefork worker (-c 2) on RabbitMQ + Redis; rounds alternate the two
systems; lateness = worker start - planned time, in milliseconds. A warm-up
round, not counted, first gives each pool process jobs of both systems: the
first task a process runs opens its Redis connection, a cost of a process's
start, not of either system.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps
from benchmarks._worker import percentile, running_worker

#: Jobs of each system run, uncounted, before the rounds (two per pool process).
WARM_UP = 4


async def measure(rounds: int, delay: float) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    jobify: list[float] = []
    async with apps.app:
        await _warm_up(delay)
        for _ in range(rounds):
            job = await apps.jobify_lateness.schedule().delay(delay)
            jobify.append(await job * 1000)
            planned = time.time() + delay
            result = apps.plain_lateness.apply_async((planned,), countdown=delay)
            plain.append(await asyncio.to_thread(result.get, timeout=30) * 1000)
    return plain, jobify


async def _warm_up(delay: float) -> None:
    """Run a few jobs of each system at once, so that both pool processes get some."""
    jobs = [await apps.jobify_lateness.schedule().delay(delay) for _ in range(WARM_UP)]
    planned = time.time() + delay
    results = [apps.plain_lateness.apply_async((planned,), countdown=delay) for _ in range(WARM_UP)]
    for job in jobs:
        await job
    for result in results:
        await asyncio.to_thread(result.get, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 10 if args.quick else args.rounds
    with running_worker(apps.celery_app, apps.QUEUE):
        plain, jobify = asyncio.run(measure(rounds, args.delay))
    print(f"delay lateness, prefork -c 2, RabbitMQ + Redis, {rounds} rounds, delay {args.delay}s")
    print(f"{'':8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in (("celery", plain), ("jobify", jobify)):
        print(
            f"{name:8} {statistics.median(values):8.1f} {percentile(values, 0.99):8.1f} "
            f"{max(values):8.1f}"
        )


if __name__ == "__main__":
    main()
