"""Drain: N pre-queued no-op tasks consumed by a prefork -c 2 worker.

    python -m benchmarks.drain [--tasks 20000] [--rounds 3] [--quick]

Each round queues N tasks (plain: ``apply_async``; jobify: ``push()``), then
tells an idle worker to consume the queue and times it until the queue is
empty. Rounds alternate plain Celery and jobify-celery.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain  # noqa: E402
from benchmarks._worker import delete_queue, purge, queue_depth, running_worker  # noqa: E402


async def _push_all(n: int) -> None:
    async with apps.app:
        for _ in range(n):
            await apps.jobify_noop.push()


def drain(system: str, n: int) -> float:
    module = plain if system == "plain" else apps
    app, queue = module.celery_app, module.QUEUE
    with running_worker(
        app, queue, app_path=f"benchmarks.{module.__name__.rsplit('.', 1)[1]}:celery_app",
        consume=False,
    ) as (_, node):
        purge(app, queue)
        if system == "plain":
            for _ in range(n):
                plain.plain_noop.apply_async()
        else:
            asyncio.run(_push_all(n))
        started = time.perf_counter()
        app.control.add_consumer(queue, destination=[node], reply=True)
        while queue_depth(app, queue) > 0:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    delete_queue(app, queue)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (2_000, 1) if args.quick else (args.tasks, args.rounds)
    rates: dict[str, list[float]] = {"plain": [], "jobify": []}
    for _ in range(rounds):
        for system in rates:
            rates[system].append(drain(system, n))
    plain_rate = statistics.median(rates["plain"])
    jobify_rate = statistics.median(rates["jobify"])
    print(f"drain: {n} no-op tasks, prefork -c 2, RabbitMQ + Redis, {rounds} round(s)")
    print(f"  celery  {plain_rate:8.0f} tasks/s   (rounds: {[round(r) for r in rates['plain']]})")
    print(f"  jobify  {jobify_rate:8.0f} tasks/s   (rounds: {[round(r) for r in rates['jobify']]})")
    print(f"  ratio jobify/celery: {jobify_rate / plain_rate:.2f}  (goal >= 0.90)")


if __name__ == "__main__":
    main()
