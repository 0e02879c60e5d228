"""Memory: worker tree PSS, idle and after N tasks, prefork -c 2.

    python -m benchmarks.memory [--tasks 20000] [--quick]

After a warm-up of 500 tasks, PSS (proportional set size) of the worker
process and its pool children,
from /proc/<pid>/smaps_rollup: shared pages are split, so the sum is the
tree's real footprint. Plain Celery's worker imports no Jobify at all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain
from benchmarks._worker import QueueDepth, delete_queue, running_worker, tree_pss_kib

WARM_UP = 500


async def _push(n: int) -> None:
    async with apps.app:
        for _ in range(n):
            await apps.jobify_noop.push()


def _run_tasks(system: str, n: int) -> None:
    module = apps if system == "jobify" else plain
    if system == "jobify":
        asyncio.run(_push(n))
    else:
        for _ in range(n):
            plain.plain_noop.delay()
    depth = QueueDepth(module.celery_app)
    while depth(module.QUEUE) > 0:
        time.sleep(0.1)
    depth.close()
    time.sleep(3)


def measure(system: str, n: int) -> tuple[int, int]:
    module = apps if system == "jobify" else plain
    path = "benchmarks.apps:celery_app" if system == "jobify" else "benchmarks.plain:celery_app"
    with running_worker(module.celery_app, module.QUEUE, app_path=path) as (process, _):
        # Warm up: the first tasks fill import and connection caches in
        # both systems; growth is measured from there.
        _run_tasks(system, WARM_UP)
        idle = tree_pss_kib(process.pid)
        _run_tasks(system, n)
        after = tree_pss_kib(process.pid)
    delete_queue(module.celery_app, module.QUEUE)
    return idle, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.tasks
    results = {system: measure(system, n) for system in ("celery", "jobify")}
    print(f"memory: worker tree PSS, prefork -c 2, idle and after {n} no-op tasks")
    for system, (idle, after) in results.items():
        growth = (after - idle) / idle * 100
        print(
            f"  {system:7} idle {idle / 1024:7.1f} MiB   after {after / 1024:7.1f} MiB   "
            f"growth {growth:+.1f}%"
        )
    (c_idle, c_after), (j_idle, j_after) = results["celery"], results["jobify"]
    print(
        f"  ratio jobify/celery: idle {j_idle / c_idle:.2f}, "
        f"after {j_after / c_after:.2f} (goal <= 1.15)"
    )


if __name__ == "__main__":
    main()
