"""Publish: N ``push()`` (one outer middleware) vs N ``apply_async``, one producer.

    python -m benchmarks.publish [--tasks 20000] [--rounds 3] [--quick]

No worker consumes: queues are purged after each round. Both reuse the
producer's pooled broker connection. Within a round the two systems publish
in alternating chunks of 500, so machine-level stalls hit both alike.
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

CHUNK = 500


async def _round(n: int) -> dict[str, float]:
    spent = {"celery": 0.0, "jobify": 0.0}
    async with apps.app:
        await apps.jobify_noop.push()
        plain.plain_noop.apply_async()
        done = 0
        while done < n:
            chunk = min(CHUNK, n - done)
            started = time.perf_counter()
            for _ in range(chunk):
                plain.plain_noop.apply_async()
            spent["celery"] += time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(chunk):
                await apps.jobify_noop.push()
            spent["jobify"] += time.perf_counter() - started
            done += chunk
    purge(plain.celery_app, plain.QUEUE)
    purge(apps.celery_app, apps.QUEUE)
    return {system: n / seconds for system, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (2_000, 2) if args.quick else (args.tasks, args.rounds)
    rates: dict[str, list[float]] = {"celery": [], "jobify": []}
    for _ in range(rounds):
        for system, rate in asyncio.run(_round(n)).items():
            rates[system].append(rate)
    delete_queue(plain.celery_app, plain.QUEUE)
    delete_queue(apps.celery_app, apps.QUEUE)
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"publish: {n} messages each, one producer, RabbitMQ, {rounds} round(s)")
    for system, label in (("celery", "celery apply_async"), ("jobify", "jobify push (+1 outer)")):
        print(
            f"  {label:24} {median[system]:8.0f} msg/s  rounds {[round(r) for r in rates[system]]}"
        )
    print(f"  ratio jobify/celery: {median['jobify'] / median['celery']:.2f}  (goal >= 0.90)")


if __name__ == "__main__":
    main()
