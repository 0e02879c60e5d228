"""Drain: N pre-queued no-op tasks per system, consumed by prefork -c 2 workers.

    python -m benchmarks.drain [--tasks 20000] [--segment 2000] [--quick]

Four systems, each with its own queue and its own idle worker: plain Celery
with its defaults (acks early), plain Celery acknowledging late like
jobify-celery does by default (``task_acks_late``,
``task_reject_on_worker_lost``), plain Celery (acks late) running the same
``async def`` no-op on an event loop of its own per process, and jobify-celery
(an ``async def`` no-op route). The first two run a plain ``def`` no-op. N tasks
are queued for each (plain: ``apply_async``; jobify: ``push()``), then the
workers take turns: one is told to consume until ``--segment`` more tasks left
its queue, then stops, then the next. Each pass gives every system one segment
within a few seconds of the others, so a machine that slows down or speeds up
mid-run (shared CPUs do) hits all alike. The goal is read off the median of the
per-pass ratios against plain Celery at the same delivery settings.

It also reads, from /proc, the CPU time each worker (parent, pool processes)
and the local RabbitMQ and Redis servers spent per task while that worker
consumed. The drain keeps both cores busy, so the ratio of those totals is a
second reading of the throughput ratio, one that CPU steal barely moves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain
from benchmarks._worker import (
    QueueDepth,
    cpu_seconds,
    delete_queue,
    running_worker,
    server_pids,
    tree_cpu_seconds,
)

SYSTEMS = ("plain", "plain-late", "plain-async", "jobify")
LABELS = {
    "plain": "celery (acks early)",
    "plain-late": "celery (acks late)",
    "plain-async": "celery async (late)",
    "jobify": "jobify-celery",
}
QUEUES = {
    "plain": plain.QUEUE + ".early",
    "plain-late": plain.QUEUE + ".late",
    "plain-async": plain.QUEUE + ".async",
    "jobify": apps.QUEUE,
}
#: Plain Celery systems acknowledging late, as jobify-celery does by default.
ACKS_LATE = ("plain-late", "plain-async")


async def _push_all(n: int) -> None:
    async with apps.app:
        for _ in range(n):
            await apps.jobify_noop.push()


def _queue_all(n: int) -> None:
    for system in ("plain", "plain-late"):
        for _ in range(n):
            plain.plain_noop.apply_async(queue=QUEUES[system])
    for _ in range(n):
        plain.plain_async_noop.apply_async(queue=QUEUES["plain-async"])
    asyncio.run(_push_all(n))


def _segment(system: str, node: str, depth: QueueDepth, size: int) -> tuple[int, float]:
    """Let one worker consume ``size`` tasks; return (consumed, seconds)."""
    app = apps.celery_app if system == "jobify" else plain.celery_app
    queue = QUEUES[system]
    before = depth(queue)
    target = max(before - size, 0)
    started = time.perf_counter()
    app.control.add_consumer(queue, destination=[node], reply=True)
    left = before
    while left > target:
        time.sleep(0.01)
        left = depth(queue)
    elapsed = time.perf_counter() - started
    app.control.cancel_consumer(queue, destination=[node], reply=True)
    return before - left, elapsed


def run(
    n: int, size: int
) -> tuple[dict[str, float], list[dict[str, float]], dict[str, tuple[float, float, float]]]:
    """Drain every queue in turns.

    Returns overall rates, each pass's rates, and the CPU time per task, in
    milliseconds, of each worker's parent process, of its pool processes and
    of the local RabbitMQ and Redis servers while that worker consumed.
    """
    depth = QueueDepth(plain.celery_app)
    servers = server_pids()
    passes: list[dict[str, float]] = []
    done = dict.fromkeys(SYSTEMS, 0)
    spent = dict.fromkeys(SYSTEMS, 0.0)
    cpu = {s: [0.0, 0.0, 0.0] for s in SYSTEMS}
    with contextlib.ExitStack() as stack:
        nodes, pids = {}, {}
        for system in SYSTEMS:
            module = apps if system == "jobify" else plain
            env = {"BENCH_PLAIN_ACKS_LATE": "1"} if system in ACKS_LATE else {}
            process, nodes[system] = stack.enter_context(
                running_worker(
                    module.celery_app,
                    QUEUES[system],
                    app_path=f"benchmarks.{module.__name__.rsplit('.', 1)[1]}:celery_app",
                    consume=False,
                    env=env,
                )
            )
            pids[system] = process.pid
        _queue_all(n)
        order = list(SYSTEMS)
        while any(done[s] < n for s in SYSTEMS):
            rates = {}
            for system in order:
                if depth(QUEUES[system]) == 0:
                    continue
                before = tree_cpu_seconds(pids[system])
                servers_before = sum(map(cpu_seconds, servers))
                consumed, seconds = _segment(system, nodes[system], depth, size)
                after = tree_cpu_seconds(pids[system])
                cpu[system][0] += after[0] - before[0]
                cpu[system][1] += after[1] - before[1]
                cpu[system][2] += sum(map(cpu_seconds, servers)) - servers_before
                done[system] += consumed
                spent[system] += seconds
                rates[system] = consumed / seconds
            if len(rates) == len(SYSTEMS):
                passes.append(rates)
            order = order[1:] + order[:1]  # who goes first rotates
            if all(depth(QUEUES[s]) == 0 for s in SYSTEMS):
                break
    depth.close()
    for system in SYSTEMS:
        delete_queue(plain.celery_app, QUEUES[system])
    rates = {s: done[s] / spent[s] for s in SYSTEMS}
    cpu_ms = {
        s: (1000 * cpu[s][0] / done[s], 1000 * cpu[s][1] / done[s], 1000 * cpu[s][2] / done[s])
        for s in SYSTEMS
    }
    return rates, passes, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--segment", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, size = (2_000, 500) if args.quick else (args.tasks, args.segment)
    overall, passes, cpu_ms = run(n, size)
    print(f"drain: {n} no-op tasks each, prefork -c 2, RabbitMQ + Redis, segments of {size}")
    for system in SYSTEMS:
        per_pass = [round(p[system]) for p in passes]
        print(f"  {LABELS[system]:20} {overall[system]:6.0f} tasks/s   passes {per_pass}")
    for system in SYSTEMS:
        parent, pool, servers = cpu_ms[system]
        print(
            f"  {LABELS[system]:20} CPU per task: parent {parent:.2f} ms, pool {pool:.2f} ms, "
            f"RabbitMQ + Redis {servers:.2f} ms, all {parent + pool + servers:.2f} ms"
        )

    def median_ratio(baseline: str) -> float:
        return statistics.median(p["jobify"] / p[baseline] for p in passes)

    print(
        f"  ratio jobify / celery acks late: {median_ratio('plain-late'):.2f} (median of "
        f"{len(passes)} passes, goal >= 0.90); / celery defaults: {median_ratio('plain'):.2f}; "
        f"/ celery running the async no-op itself: {median_ratio('plain-async'):.2f}"
    )
    # On a machine the drain saturates, tasks per second go as 1 / (CPU per
    # task, servers included): the same ratio read off CPU time, which CPU
    # steal and other tenants disturb far less than wall-clock rates.
    total = {s: sum(cpu_ms[s]) for s in SYSTEMS}
    print(
        f"  CPU cost ratio (celery / jobify, all processes): acks late "
        f"{total['plain-late'] / total['jobify']:.2f}; defaults "
        f"{total['plain'] / total['jobify']:.2f}; async itself "
        f"{total['plain-async'] / total['jobify']:.2f}"
    )


if __name__ == "__main__":
    main()
