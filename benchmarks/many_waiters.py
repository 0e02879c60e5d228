"""Many waiters: N jobs pushed, then awaited together by one producer.

    python -m benchmarks.many_waiters [--jobs 10000] [--quick]

Reports the producer's thread count before and after (no thread per waiting
job), the total time and the time per job; plain Celery's ``ResultSet.join``
of the same number of ``apply_async`` results beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from celery.result import ResultSet

from benchmarks import apps, plain
from benchmarks._worker import both_workers, delete_queue


async def jobify_run(n: int) -> tuple[float, int, int]:
    async with apps.app:
        before = threading.active_count()
        started = time.perf_counter()
        jobs = [await apps.jobify_add.push(i, 1) for i in range(n)]
        results = await asyncio.gather(*jobs)
        elapsed = time.perf_counter() - started
        peak = threading.active_count()
    _check_sums(results, n)
    return elapsed, before, peak


def plain_run(n: int) -> float:
    started = time.perf_counter()
    results = ResultSet([plain.plain_add.delay(i, 1) for i in range(n)])
    values = results.join(timeout=600)
    elapsed = time.perf_counter() - started
    _check_sums(values, n)
    return elapsed


def _check_sums(results: list[int], n: int) -> None:
    if results != [i + 1 for i in range(n)]:
        msg = "wrong results: the benchmark measured a broken run"
        raise RuntimeError(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 1_000 if args.quick else args.jobs
    with both_workers():
        jobify_elapsed, threads_before, threads_after = asyncio.run(jobify_run(n))
        plain_elapsed = plain_run(n)
    delete_queue(plain.celery_app, plain.QUEUE)
    delete_queue(apps.celery_app, apps.QUEUE)
    print(f"many waiters: {n} jobs pushed then awaited together, prefork -c 2")
    print(
        f"  jobify  {jobify_elapsed:7.2f} s  {jobify_elapsed / n * 1000:6.3f} ms/job  "
        f"threads {threads_before} -> {threads_after}"
    )
    per_job = plain_elapsed / n * 1000
    print(f"  celery  {plain_elapsed:7.2f} s  {per_job:6.3f} ms/job  (ResultSet.join)")
    print(f"  ratio jobify/celery time: {jobify_elapsed / plain_elapsed:.2f}")


if __name__ == "__main__":
    main()
