"""Publish: N ``push()`` (one outer middleware) vs N ``apply_async``, one producer.

    python -m benchmarks.publish [--tasks 20000] [--rounds 3] [--quick]

No worker consumes: the queue is purged after each round. Both reuse the
producer's pooled broker connection. Rounds alternate the two.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain
from benchmarks._worker import delete_queue, purge


def publish_plain(n: int) -> float:
    plain.plain_noop.apply_async()  # warm the connection
    started = time.perf_counter()
    for _ in range(n):
        plain.plain_noop.apply_async()
    elapsed = time.perf_counter() - started
    purge(plain.celery_app, plain.QUEUE)
    return n / elapsed


async def _publish_jobify(n: int) -> float:
    async with apps.app:
        await apps.jobify_noop.push()
        started = time.perf_counter()
        for _ in range(n):
            await apps.jobify_noop.push()
        elapsed = time.perf_counter() - started
    purge(apps.celery_app, apps.QUEUE)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (2_000, 2) if args.quick else (args.tasks, args.rounds)
    rates: dict[str, list[float]] = {"celery": [], "jobify": []}
    for _ in range(rounds):
        rates["celery"].append(publish_plain(n))
        rates["jobify"].append(asyncio.run(_publish_jobify(n)))
    delete_queue(plain.celery_app, plain.QUEUE)
    delete_queue(apps.celery_app, apps.QUEUE)
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"publish: {n} messages, one producer, RabbitMQ, {rounds} round(s)")
    print(
        f"  celery apply_async      {median['celery']:8.0f} msg/s  rounds {[round(r) for r in rates['celery']]}"
    )
    print(
        f"  jobify push (+1 outer)  {median['jobify']:8.0f} msg/s  rounds {[round(r) for r in rates['jobify']]}"
    )
    print(f"  ratio jobify/celery: {median['jobify'] / median['celery']:.2f}  (goal >= 0.90)")


if __name__ == "__main__":
    main()
