"""Round trip: sequential push -> await vs apply_async -> get, Redis backend.

    python -m benchmarks.roundtrip [--jobs 1000] [--quick]

A prefork -c 2 worker per system (plain Celery, jobify-celery), both running;
jobs alternate one by one, so machine-level stalls hit both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain
from benchmarks._worker import both_workers, delete_queue, percentile

BLOCK = 1


async def measure(n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"celery": [], "jobify": []}
    async with apps.app:
        await (await apps.jobify_add.push(0, 0))
        await asyncio.to_thread(plain.plain_add.delay(0, 0).get, timeout=30)
        while len(times["jobify"]) < n:
            for _ in range(BLOCK):
                started = time.perf_counter()
                await (await apps.jobify_add.push(1, 2))
                times["jobify"].append((time.perf_counter() - started) * 1000)
            for _ in range(BLOCK):
                started = time.perf_counter()
                plain.plain_add.delay(1, 2).get(timeout=30)
                times["celery"].append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 200 if args.quick else args.jobs
    with both_workers():
        times = asyncio.run(measure(n))
    delete_queue(plain.celery_app, plain.QUEUE)
    delete_queue(apps.celery_app, apps.QUEUE)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    p99 = {k: percentile(v, 0.99) for k, v in times.items()}
    print(f"round trip: {n} sequential jobs each, prefork -c 2, RabbitMQ + Redis")
    for name in ("celery", "jobify"):
        print(f"  {name:7} p50 {p50[name]:6.2f} ms   p99 {p99[name]:6.2f} ms")
    print(
        f"  p50 difference {p50['jobify'] - p50['celery']:+.2f} ms (goal <= +1 ms); "
        f"p99 ratio {p99['jobify'] / p99['celery']:.2f} (goal <= 1.2)"
    )


if __name__ == "__main__":
    main()
