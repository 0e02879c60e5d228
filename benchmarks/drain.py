"""Drain: N pre-queued tasks per system, consumed by prefork -c 2 workers.

    python -m benchmarks.drain [--tasks 20000] [--segment 2000] [--app both] [--quick]

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

``--app realistic`` (or ``both``, the default) adds the realistic pair
(``benchmarks.realistic``: middleware on both sides, a tenant in
``request_state``, lifespan, SQLite storage, a router prefix, a dataclass in
and out, one Redis ``INCR`` per job) beside plain Celery doing the same user
work, acking early and late; its workers take their turns with the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from typing import TYPE_CHECKING, NamedTuple

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from benchmarks import apps, plain, realistic, realistic_plain
from benchmarks._worker import (
    QueueDepth,
    cpu_seconds,
    delete_queue,
    running_worker,
    server_pids,
    tree_cpu_seconds,
)

if TYPE_CHECKING:
    from celery import Celery

BARE = ("plain", "plain-late", "plain-async", "jobify")
REALISTIC = ("real-plain", "real-plain-late", "real-jobify")


class System(NamedTuple):
    """One drained system: how it is labelled, its queue and its Celery app."""

    label: str
    queue: str
    #: The Celery app as ``celery -A`` finds it, and the object itself.
    app_path: str
    celery_app: Celery


_PLAIN = ("benchmarks.plain:celery_app", plain.celery_app)
_REAL_PLAIN = ("benchmarks.realistic_plain:plain_app", realistic_plain.plain_app)
SYSTEMS = {
    "plain": System("celery (acks early)", plain.QUEUE + ".early", *_PLAIN),
    "plain-late": System("celery (acks late)", plain.QUEUE + ".late", *_PLAIN),
    "plain-async": System("celery async (late)", plain.QUEUE + ".async", *_PLAIN),
    "jobify": System("jobify-celery", apps.QUEUE, "benchmarks.apps:celery_app", apps.celery_app),
    "real-plain": System(
        "celery (acks early)", realistic_plain.PLAIN_QUEUE + ".early", *_REAL_PLAIN
    ),
    "real-plain-late": System(
        "celery (acks late)", realistic_plain.PLAIN_QUEUE + ".late", *_REAL_PLAIN
    ),
    "real-jobify": System(
        "jobify-celery",
        realistic.QUEUE,
        "benchmarks.realistic:celery_app",
        realistic.celery_app,
    ),
}
#: Plain Celery systems acknowledging late, as jobify-celery does by default.
ACKS_LATE = ("plain-late", "plain-async", "real-plain-late")


async def _push_all(systems: tuple[str, ...], n: int) -> None:
    if "jobify" in systems:
        async with apps.app:
            for _ in range(n):
                await apps.jobify_noop.push()
    if "real-jobify" in systems:
        async with realistic.app:
            for _ in range(n):
                await realistic.place.push(realistic_plain.ORDER)


def _queue_all(systems: tuple[str, ...], n: int) -> None:
    for system in ("plain", "plain-late"):
        if system in systems:
            for _ in range(n):
                plain.plain_noop.apply_async(queue=SYSTEMS[system].queue)
    if "plain-async" in systems:
        for _ in range(n):
            plain.plain_async_noop.apply_async(queue=SYSTEMS["plain-async"].queue)
    for system in ("real-plain", "real-plain-late"):
        if system in systems:
            for _ in range(n):
                realistic_plain.plain_publish(queue=SYSTEMS[system].queue)
    asyncio.run(_push_all(systems, n))


def _segment(system: str, node: str, depth: QueueDepth, size: int) -> tuple[int, float]:
    """Let one worker consume ``size`` tasks; return (consumed, seconds)."""
    app = SYSTEMS[system].celery_app
    queue = SYSTEMS[system].queue
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
    systems: tuple[str, ...], n: int, size: int
) -> tuple[dict[str, float], list[dict[str, float]], dict[str, tuple[float, float, float]]]:
    """Drain every queue in turns.

    Returns overall rates, each pass's rates, and the CPU time per task, in
    milliseconds, of each worker's parent process, of its pool processes and
    of the local RabbitMQ and Redis servers while that worker consumed.
    """
    depth = QueueDepth(plain.celery_app)
    servers = server_pids()
    passes: list[dict[str, float]] = []
    done = dict.fromkeys(systems, 0)
    spent = dict.fromkeys(systems, 0.0)
    cpu = {s: [0.0, 0.0, 0.0] for s in systems}
    with contextlib.ExitStack() as stack:
        nodes, pids = {}, {}
        for system in systems:
            env = {"BENCH_PLAIN_ACKS_LATE": "1"} if system in ACKS_LATE else {}
            process, nodes[system] = stack.enter_context(
                running_worker(
                    SYSTEMS[system].celery_app,
                    SYSTEMS[system].queue,
                    app_path=SYSTEMS[system].app_path,
                    consume=False,
                    env=env,
                )
            )
            pids[system] = process.pid
        _queue_all(systems, n)
        order = list(systems)
        while any(done[s] < n for s in systems):
            rates = {}
            for system in order:
                if depth(SYSTEMS[system].queue) == 0:
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
            if len(rates) == len(systems):
                passes.append(rates)
            order = order[1:] + order[:1]  # who goes first rotates
            if all(depth(SYSTEMS[s].queue) == 0 for s in systems):
                break
    depth.close()
    for system in systems:
        delete_queue(plain.celery_app, SYSTEMS[system].queue)
    rates = {s: done[s] / spent[s] for s in systems}
    cpu_ms = {
        s: (1000 * cpu[s][0] / done[s], 1000 * cpu[s][1] / done[s], 1000 * cpu[s][2] / done[s])
        for s in systems
    }
    return rates, passes, cpu_ms


def _report(
    title: str,
    systems: tuple[str, ...],
    overall: dict[str, float],
    passes: list[dict[str, float]],
    cpu_ms: dict[str, tuple[float, float, float]],
) -> None:
    print(title)
    for system in systems:
        per_pass = [round(p[system]) for p in passes]
        print(f"  {SYSTEMS[system].label:20} {overall[system]:6.0f} tasks/s   passes {per_pass}")
    for system in systems:
        parent, pool, servers = cpu_ms[system]
        label = SYSTEMS[system].label
        print(
            f"  {label:20} CPU per task: parent {parent:.2f} ms, pool {pool:.2f} ms, "
            f"RabbitMQ + Redis {servers:.2f} ms, all {parent + pool + servers:.2f} ms"
        )


def _median_ratio(passes: list[dict[str, float]], system: str, baseline: str) -> float:
    return statistics.median(p[system] / p[baseline] for p in passes)


def _cost_ratio(cpu_ms: dict[str, tuple[float, float, float]], system: str, baseline: str) -> float:
    """Celery's CPU per task over the system's, servers included (see the docstring)."""
    return sum(cpu_ms[baseline]) / sum(cpu_ms[system])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--segment", type=int, default=2_000)
    parser.add_argument("--app", choices=("bare", "realistic", "both"), default="both")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, size = (2_000, 500) if args.quick else (args.tasks, args.segment)
    systems = (BARE if args.app != "realistic" else ()) + (REALISTIC if args.app != "bare" else ())
    try:
        overall, passes, cpu_ms = run(systems, n, size)
    finally:
        realistic_plain.cleanup()
    setup = f"prefork -c 2, RabbitMQ + Redis, segments of {size}"
    if args.app != "realistic":
        _report(f"drain, bare app: {n} no-op tasks each, {setup}", BARE, overall, passes, cpu_ms)
        print(
            f"  ratio jobify / celery acks late: "
            f"{_median_ratio(passes, 'jobify', 'plain-late'):.2f} (median of {len(passes)} "
            f"passes, goal >= 1.0); / celery defaults: "
            f"{_median_ratio(passes, 'jobify', 'plain'):.2f}; / celery running the async "
            f"no-op itself: {_median_ratio(passes, 'jobify', 'plain-async'):.2f}"
        )
        # On a machine the drain saturates, tasks per second go as 1 / (CPU per
        # task, servers included): the same ratio read off CPU time, which CPU
        # steal and other tenants disturb far less than wall-clock rates.
        print(
            f"  CPU cost ratio (celery / jobify, all processes): acks late "
            f"{_cost_ratio(cpu_ms, 'jobify', 'plain-late'):.2f}; defaults "
            f"{_cost_ratio(cpu_ms, 'jobify', 'plain'):.2f}; async itself "
            f"{_cost_ratio(cpu_ms, 'jobify', 'plain-async'):.2f}"
        )
    if args.app != "bare":
        _report(
            f"drain, realistic app: {n} orders each (middleware, request_state, lifespan, "
            f"dataclass in and out, one Redis INCR), {setup}",
            REALISTIC,
            overall,
            passes,
            cpu_ms,
        )
        print(
            f"  ratio jobify / celery defaults: "
            f"{_median_ratio(passes, 'real-jobify', 'real-plain'):.2f} (goal >= 0.95); "
            f"/ celery acks late: {_median_ratio(passes, 'real-jobify', 'real-plain-late'):.2f} "
            f"(goal >= 0.98) (medians of {len(passes)} passes)"
        )
        print(
            f"  CPU cost ratio (celery / jobify, all processes): defaults "
            f"{_cost_ratio(cpu_ms, 'real-jobify', 'real-plain'):.2f}; acks late "
            f"{_cost_ratio(cpu_ms, 'real-jobify', 'real-plain-late'):.2f}"
        )


if __name__ == "__main__":
    main()
