"""I/O-bound jobs, one worker process: the asyncio pool beside Celery's pools and async peers.

    python -m benchmarks.async_io [--jobs 5000] [--quick] [--steps drain,many,noop]

Every system drains the same pre-queued jobs, each waiting 50 ms (as on the
network) and then bumping a Redis counter, with one worker process and up
to 1,000 jobs in flight (200 for the thread pools), on the same RabbitMQ and
Redis. The rate counts from the first job's INCR to the last one; CPU per
job is the worker process tree's CPU over that time.

* jobify-celery's asyncio pool (``-c 1000``), again with Python's collector
  left at its defaults (``tune_gc=False``), and its threads pool (``-c 200``);
* plain Celery, threads (``-c 200``) and gevent (``-c 1000``, sync sleep);
* Taskiq with taskiq-aio-pika, and aio-celery (``benchmarks/peers``; install
  them with ``pip install -e '.[bench]'``). Neither stores results by default,
  where jobify-celery stores every job's state in Redis: aio-celery runs again
  with its Redis results on.

Then, for the asyncio pool alone: 10,000 jobs in flight at once (each
staying 30 s, so that all 10,000 are truly in flight together; none lost,
and how much the worker's memory grew), and the drain of no-op jobs beside a
prefork ``-c 2`` worker. ``--steps`` runs some of the three steps only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from typing import Any

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

import redis

from benchmarks import io_apps
from benchmarks._worker import delete_queue, running_worker, tree_cpu_seconds, tree_pss_kib

ASYNCIO_POOL_ENV = {"CELERY_CUSTOM_WORKER_POOL": "jobify_celery.pool:AsyncioPool"}
DRAIN_TIMEOUT = 300.0


def _counter() -> str:
    return f"{io_apps.BASE}:counter:{uuid.uuid4().hex[:8]}"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(io_apps.REDIS_URL)


async def _push_jobify(n: int, counter: str) -> None:
    async with io_apps.app:
        for start in range(0, n, 500):
            batch = min(500, n - start)
            await asyncio.gather(*(io_apps.io_job.push(counter) for _ in range(batch)))


def _push_plain(n: int, counter: str) -> None:
    for _ in range(n):
        io_apps.io_plain_job.apply_async((counter,))


def _measure(pid: int, counter: str, n: int) -> dict[str, Any]:
    """Wait for the counter to reach ``n``; rate and CPU from its first increment."""
    client = _redis()
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while int(client.get(counter) or 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        first, cpu_first = time.monotonic(), sum(tree_cpu_seconds(pid))
        peak = tree_pss_kib(pid)
        while int(client.get(counter) or 0) < n and time.monotonic() < deadline:
            time.sleep(0.02)
            peak = max(peak, tree_pss_kib(pid))
        seconds = time.monotonic() - first
        done = int(client.get(counter) or 0)
        cpu = sum(tree_cpu_seconds(pid)) - cpu_first
        client.delete(counter)
    finally:
        client.close()
    return {**_rates(done, seconds, cpu), "seconds": seconds, "peak_pss_mib": peak / 1024}


def _rates(done: int, seconds: float, cpu: float) -> dict[str, Any]:
    """Jobs done, jobs per second and the worker's CPU per job."""
    return {
        "done": done,
        "jobs_per_s": done / seconds if seconds else 0.0,
        "cpu_ms_per_job": cpu / done * 1000 if done else 0.0,
    }


def _jobify(n: int, pool: str, concurrency: int, *, tune_gc: bool = True) -> dict[str, Any]:
    counter = _counter()
    asyncio.run(_push_jobify(n, counter))
    asyncio_pool = pool == "asyncio"
    env = {**ASYNCIO_POOL_ENV} if asyncio_pool else {}
    env["BENCH_TUNE_GC"] = "1" if tune_gc else "0"
    with running_worker(
        io_apps.celery_app,
        io_apps.QUEUE,
        app_path="benchmarks.io_apps:celery_app",
        pool="custom" if asyncio_pool else pool,
        concurrency=concurrency,
        env=env,
    ) as (process, _):
        return _measure(process.pid, counter, n)


def _plain(n: int, pool: str, concurrency: int) -> dict[str, Any]:
    counter = _counter()
    _push_plain(n, counter)
    with running_worker(
        io_apps.plain_app,
        io_apps.PLAIN_QUEUE,
        app_path="benchmarks.io_apps:plain_app",
        pool=pool,
        concurrency=concurrency,
    ) as (process, _):
        return _measure(process.pid, counter, n)


def _peer(module: str, n: int, **options: Any) -> dict[str, Any] | str:
    try:
        peer = __import__(f"benchmarks.peers.{module}", fromlist=["run"])
    except ImportError as exc:
        return f"not installed ({exc.name}): pip install -e '.[bench]'"
    result: dict[str, Any] = peer.run(n=n, in_flight=1000, **options)
    return result


#: How long each job of the 10,000-in-flight step stays in flight: longer
#: than the consumer takes to hand 10,000 messages to the pool.
HOLD_SECONDS = 30.0


async def _push_holds(n: int, counter: str) -> None:
    async with io_apps.app:
        for start in range(0, n, 500):
            batch = min(500, n - start)
            await asyncio.gather(
                *(io_apps.io_hold.push(counter, HOLD_SECONDS) for _ in range(batch))
            )


def _ten_thousand_in_flight(n: int) -> dict[str, Any]:
    """10,000 jobs at once in one process: none lost, and the memory it takes.

    Each job stays in flight for ``HOLD_SECONDS``; a job counts its start and
    its end in Redis, and the most started-but-unfinished jobs seen at once is
    reported (it must reach 10,000 for the memory figure to mean anything).
    """
    counter = _counter()
    asyncio.run(_push_holds(n, counter))
    client = _redis()
    with running_worker(
        io_apps.celery_app,
        io_apps.QUEUE,
        app_path="benchmarks.io_apps:celery_app",
        pool="custom",
        concurrency=10_000,
        env=ASYNCIO_POOL_ENV,
        consume=False,
    ) as (process, node):
        pid = process.pid
        idle = tree_pss_kib(pid)
        io_apps.celery_app.control.add_consumer(io_apps.QUEUE, destination=[node], reply=True)
        started_at, cpu_first = time.monotonic(), sum(tree_cpu_seconds(pid))
        deadline = started_at + DRAIN_TIMEOUT
        peak, in_flight, done = idle, 0, 0
        try:
            while done < n and time.monotonic() < deadline:
                time.sleep(0.1)
                started, done = (int(v or 0) for v in client.mget(f"{counter}:started", counter))
                in_flight = max(in_flight, started - done)
                peak = max(peak, tree_pss_kib(pid))
            seconds = time.monotonic() - started_at
            cpu = sum(tree_cpu_seconds(pid)) - cpu_first
        finally:
            client.delete(counter, f"{counter}:started")
            client.close()
    return {
        **_rates(done, seconds, cpu),
        "peak_in_flight": in_flight,
        "idle_pss_mib": idle / 1024,
        "peak_pss_mib": peak / 1024,
        "growth_mib": (peak - idle) / 1024,
    }


async def _push_noops(n: int) -> None:
    async with io_apps.app:
        for start in range(0, n, 500):
            await asyncio.gather(*(io_apps.io_noop.push() for _ in range(min(500, n - start))))


def _noop_drain(n: int, pool: str, concurrency: int) -> float:
    """Seconds for one worker to drain ``n`` no-op jobs."""
    asyncio.run(_push_noops(n))
    asyncio_pool = pool == "asyncio"
    with running_worker(
        io_apps.celery_app,
        io_apps.QUEUE,
        app_path="benchmarks.io_apps:celery_app",
        pool="custom" if asyncio_pool else pool,
        concurrency=concurrency,
        env=ASYNCIO_POOL_ENV if asyncio_pool else None,
        consume=False,
    ) as (_process, node):
        from benchmarks._worker import QueueDepth  # noqa: PLC0415

        depth = QueueDepth(io_apps.celery_app)
        try:
            started = time.monotonic()
            io_apps.celery_app.control.add_consumer(io_apps.QUEUE, destination=[node], reply=True)
            while depth(io_apps.QUEUE) > 0 and time.monotonic() - started < DRAIN_TIMEOUT:
                time.sleep(0.02)
            return time.monotonic() - started
        finally:
            depth.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--steps",
        default="drain,many,noop",
        help="which steps to run: drain (all systems), many (10,000 in flight), noop",
    )
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    if not steps <= {"drain", "many", "noop"}:
        parser.error(f"unknown step in --steps {args.steps!r}: use drain, many, noop")
    if "drain" in steps:
        _drain_step(args)
    if "many" in steps:
        _many_step(2_000 if args.quick else 20_000)
    if "noop" in steps:
        _noop_step(2_000 if args.quick else 20_000)
    delete_queue(io_apps.celery_app, io_apps.QUEUE)
    delete_queue(io_apps.plain_app, io_apps.PLAIN_QUEUE)


def _drain_step(args: argparse.Namespace) -> None:
    # The clock starts at the first job's INCR: with fewer jobs than about three
    # times the jobs in flight, a pool can finish them all in one wave.
    n = 3000 if args.quick else args.jobs
    results: dict[str, dict[str, Any] | str] = {
        "jobify-celery asyncio pool -c 1000": _jobify(n, "asyncio", 1000),
        "  the same, tune_gc=False": _jobify(n, "asyncio", 1000, tune_gc=False),
        "jobify-celery threads -c 200": _jobify(n, "threads", 200),
        "celery threads -c 200": _plain(n, "threads", 200),
        "celery gevent -c 1000": _plain(n, "gevent", 1000),
        "taskiq + taskiq-aio-pika, 1,000 tasks": _peer("taskiq_peer", n),
        "aio-celery, concurrency 1,000": _peer("aiocelery_peer", n),
        "aio-celery, results in Redis": _peer("aiocelery_peer", n, results=True),
    }
    print(f"I/O-bound drain: {n} jobs (50 ms wait, then a Redis INCR), one worker process")
    rates: dict[str, float] = {}
    for name, result in results.items():
        if isinstance(result, str):
            print(f"  {name:40} {result}")
            continue
        rates[name] = result["jobs_per_s"]
        print(
            f"  {name:40} {result['jobs_per_s']:7.0f} jobs/s  "
            f"CPU {result['cpu_ms_per_job']:.2f} ms/job  done {result['done']}/{n}"
        )
    ours = rates.get("jobify-celery asyncio pool -c 1000", 0.0)
    peers = [rates[k] for k in rates if k.startswith(("taskiq", "aio-celery")) and rates[k]]
    if peers:
        print(f"  asyncio pool / faster async peer: x{ours / max(peers):.2f}  (goal >= 1.0)")
    threads = rates.get("jobify-celery threads -c 200")
    if threads:
        print(f"  asyncio pool / jobify-celery threads: x{ours / threads:.2f}  (goal >= 3.0)")


def _many_step(n: int) -> None:
    many = _ten_thousand_in_flight(n)
    unfinished = n - many["done"]
    # Jobs not done by the deadline are not lost: the worker is stopped warm
    # and their messages go back to the queue (deleted at the end).
    late = f", {unfinished} unfinished at the {DRAIN_TIMEOUT:.0f} s deadline" if unfinished else ""
    print(
        f"  10,000 in flight ({HOLD_SECONDS:.0f} s jobs): at most {many['peak_in_flight']} "
        f"at once, done {many['done']}/{n}{late}, "
        f"CPU {many['cpu_ms_per_job']:.2f} ms/job, "
        f"worker PSS {many['idle_pss_mib']:.0f} -> {many['peak_pss_mib']:.0f} MiB "
        f"(+{many['growth_mib']:.0f} MiB; goal <= 200)"
    )


def _noop_step(noops: int) -> None:
    asyncio_s = _noop_drain(noops, "asyncio", 1000)
    prefork_s = _noop_drain(noops, "prefork", 2)
    print(
        f"  no-op drain, {noops} jobs: asyncio pool {noops / asyncio_s:.0f} jobs/s, "
        f"prefork -c 2 {noops / prefork_s:.0f} jobs/s (x{prefork_s / asyncio_s:.2f})"
    )


if __name__ == "__main__":
    main()
