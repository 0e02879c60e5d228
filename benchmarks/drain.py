"""Drain: N pre-queued no-op tasks consumed by a prefork -c 2 worker.

    python -m benchmarks.drain [--tasks 20000] [--rounds 3] [--quick]

Each round queues N tasks (plain: ``apply_async``; jobify: ``push()``), then
tells an idle worker to consume the queue and times it until the queue is
empty. Rounds alternate three setups: plain Celery with its defaults (acks
early), plain Celery acknowledging late like jobify-celery does by default
(``task_acks_late``, ``task_reject_on_worker_lost``), and jobify-celery. The
goal is met against the second: same delivery guarantee, the adapter's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain
from benchmarks._worker import delete_queue, purge, queue_depth, running_worker


async def _push_all(n: int) -> None:
    async with apps.app:
        for _ in range(n):
            await apps.jobify_noop.push()


def drain(system: str, n: int) -> float:
    module = apps if system == "jobify" else plain
    if system == "plain-late":
        os.environ["BENCH_PLAIN_ACKS_LATE"] = "1"
    else:
        os.environ.pop("BENCH_PLAIN_ACKS_LATE", None)
    app, queue = module.celery_app, module.QUEUE
    with running_worker(
        app,
        queue,
        app_path=f"benchmarks.{module.__name__.rsplit('.', 1)[1]}:celery_app",
        consume=False,
    ) as (_, node):
        purge(app, queue)
        if system != "jobify":
            for _ in range(n):
                plain.plain_noop.apply_async()
        else:
            asyncio.run(_push_all(n))
        started = time.perf_counter()
        app.control.add_consumer(queue, destination=[node], reply=True)
        while queue_depth(app, queue) > 0:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    # Emptied, not deleted: this process's producer remembers the queue as
    # declared, so messages published after a delete would be dropped.
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (2_000, 1) if args.quick else (args.tasks, args.rounds)
    rates: dict[str, list[float]] = {"plain": [], "plain-late": [], "jobify": []}
    for _ in range(rounds):
        for system in rates:
            rates[system].append(drain(system, n))
    delete_queue(plain.celery_app, plain.QUEUE)
    delete_queue(apps.celery_app, apps.QUEUE)
    median = {system: statistics.median(values) for system, values in rates.items()}
    print(f"drain: {n} no-op tasks, prefork -c 2, RabbitMQ + Redis, {rounds} round(s)")
    labels = {
        "plain": "celery (acks early)",
        "plain-late": "celery (acks late)",
        "jobify": "jobify-celery",
    }
    for system, label in labels.items():
        rounds_text = [round(r) for r in rates[system]]
        print(f"  {label:20} {median[system]:8.0f} tasks/s   rounds {rounds_text}")
    print(
        f"  ratio jobify / celery acks late: {median['jobify'] / median['plain-late']:.2f} "
        f"(goal >= 0.90); / celery defaults: {median['jobify'] / median['plain']:.2f}"
    )


if __name__ == "__main__":
    main()
