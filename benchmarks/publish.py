"""Publish: ``push()`` (one outer middleware) beside ``apply_async``, one producer process.

    python -m benchmarks.publish [--tasks 20000] [--rounds 3] [--app both] [--quick]

Six ways to publish N messages, in alternating chunks of 500 so that the
machine's stalls hit all alike:

* ``celery``: ``apply_async`` one after another (blocking; it returns once the
  message is written to the socket), and the same with Celery's own publisher
  confirms (``confirm_publish``: the guarantee a confirmed push gives);
* ``push one by one``: ``await push()`` one after another, without publisher
  confirms (the default) and with them (``publish_confirms=True``);
* ``push 100 at a time``: 100 pushes in flight at once (a web app serving
  concurrent requests), without and with confirms.

``--app realistic`` (or ``both``, the default) adds the realistic pair
(``benchmarks.realistic``): ``place.push(order)`` through two outer
middlewares that fill ``request_state``, a dataclass argument, a router
prefix and a queue declared with ``x-expires``, beside plain Celery's
``apply_async`` of the same order as a dict with the tenant in a header, to
the same kind of queue.

Both sides follow what they publish, as producers do: Celery subscribes each
``apply_async`` to its result (Redis backend), the bridge follows each pushed
job. No worker runs, so after each chunk both let go of what they follow (the
``AsyncResult`` list is dropped; the Jobify app is left, which lets go of its
pending jobs, and started again): what is measured is the publishing, not a
heap of results that never come. For each push variant it also reports the
event loop's longest stall (how late a 1 ms timer fired while pushes ran;
``apply_async`` blocks the loop for its whole call, so it has none to report),
and the longest stretch of the loop's own work: the CPU time the loop's
thread spent during a stall that no garbage collection overlapped. The first
figure includes Python's full collections of this process's heap (tens of
milliseconds here, whatever the code) and the moments the OS runs RabbitMQ or
Redis instead of the producer on this 2-core machine; the second is what the
bridge's code costs the loop at a stretch. 100 pushes started at once are
100 pushes' worth of CPU in one turn of the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from typing import Any

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from jobify import Jobify

from benchmarks import apps, plain, realistic, realistic_plain
from benchmarks._celery import bench_celery_app
from benchmarks._worker import delete_queue, purge
from jobify_celery import JobifyCelery

CHUNK = 500
IN_FLIGHT = 100


def _jobify_side(name: str, *, confirms: bool) -> tuple[Any, Jobify, Any]:
    celery_app = bench_celery_app(name, f"{apps.QUEUE}.{name}")
    app = Jobify(storage=False, outer_middleware=[apps.PassThrough()])
    JobifyCelery(app, celery_app, publish_confirms=confirms)

    @app.task(name="bench.jobify_noop")
    async def noop() -> None:
        return None

    return celery_app, app, noop.push


async def _push_order() -> Any:
    return await realistic.place.push(realistic_plain.ORDER)


REALISTIC = (realistic.celery_app, realistic.app, _push_order)


confirmed_plain = bench_celery_app(
    "bench_plain_confirmed",
    f"{plain.QUEUE}.confirmed",
    broker_transport_options={"confirm_publish": True},
)


@confirmed_plain.task(name="bench.plain_noop", shared=False)
def confirmed_plain_noop() -> None:
    return None


CELERY = {
    "celery apply_async": (plain.celery_app, plain.plain_noop.apply_async),
    "celery apply_async, confirm_publish": (confirmed_plain, confirmed_plain_noop.apply_async),
}
REALISTIC_CELERY = {
    "celery apply_async, realistic": (realistic_plain.plain_app, realistic_plain.plain_publish),
}
UNCONFIRMED = _jobify_side("bench_unconfirmed", confirms=False)
CONFIRMED = _jobify_side("bench_confirmed", confirms=True)


async def _one_by_one(push: Any, count: int) -> None:
    for _ in range(count):
        await push()


async def _in_flight(push: Any, count: int) -> None:
    for start in range(0, count, IN_FLIGHT):
        await asyncio.gather(*(push() for _ in range(min(IN_FLIGHT, count - start))))


VARIANTS = {
    "push one by one": (UNCONFIRMED, _one_by_one),
    "push one by one, confirms": (CONFIRMED, _one_by_one),
    "push 100 at a time": (UNCONFIRMED, _in_flight),
    "push 100 at a time, confirms": (CONFIRMED, _in_flight),
}
REALISTIC_VARIANTS = {
    "push one by one, realistic": (REALISTIC, _one_by_one),
    "push 100 at a time, realistic": (REALISTIC, _in_flight),
}


class _Collections:
    """When Python's garbage collector ran (its full collections stop everything)."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, _info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        elif now - self._started > 0.0005:  # the short young-generation ones cannot stall
            self.spans.append((self._started, now))
            del self.spans[:-20]

    def overlaps(self, start: float, end: float) -> bool:
        return any(a < end and b > start for a, b in self.spans)


COLLECTIONS = _Collections()


class _Stalls:
    """The longest delay of a 1 ms timer while it runs, with and without collections."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_outside_gc = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            started, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            ended, used = time.perf_counter(), time.thread_time() - cpu
            late = ended - started - 0.001
            self.longest = max(self.longest, late)
            if not COLLECTIONS.overlaps(started, ended):
                # The loop's own work: what of the delay this thread spent on
                # the CPU (a delay the OS scheduler causes is not the loop's).
                self.longest_outside_gc = max(self.longest_outside_gc, min(late, used))


async def _push_chunk(
    side: tuple[Any, Jobify, Any], publish: Any, chunk: int
) -> tuple[float, _Stalls]:
    _, app, push = side
    async with app:
        await push()  # connected, queue declared, watcher subscribed
        meter = _Stalls()
        meter.start()
        await asyncio.sleep(0)
        started = time.perf_counter()
        await publish(push, chunk)
        spent = time.perf_counter() - started
        meter.stop()
    return spent, meter


async def _round(
    n: int, celery: dict[str, Any], variants: dict[str, Any]
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    spent = dict.fromkeys([*celery, *variants], 0.0)
    stalls = dict.fromkeys(variants, (0.0, 0.0))
    for _, publish_one in celery.values():
        publish_one()
    done = 0
    while done < n:
        chunk = min(CHUNK, n - done)
        for name, (_, publish_one) in celery.items():
            started = time.perf_counter()
            followed = [publish_one() for _ in range(chunk)]
            spent[name] += time.perf_counter() - started
            del followed
        for name, (side, publish) in variants.items():
            seconds, meter = await _push_chunk(side, publish, chunk)
            spent[name] += seconds
            longest, outside = stalls[name]
            stalls[name] = (
                max(longest, meter.longest),
                max(outside, meter.longest_outside_gc),
            )
        done += chunk
        # Emptied after every chunk: a queue that grows long (and one side's
        # grows twice as fast: two push variants share its queue) slows the
        # broker's publishes to it, which is not what is measured here.
        for celery_app in _celery_apps(celery, variants):
            purge(celery_app, celery_app.conf.task_default_queue)
    return {system: n / seconds for system, seconds in spent.items()}, stalls


def _celery_apps(celery: dict[str, Any], variants: dict[str, Any]) -> list[Any]:
    found = [celery_app for celery_app, _ in celery.values()]
    found += [side[0] for side, _ in variants.values()]
    return list({id(app): app for app in found}.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--app", choices=("bare", "realistic", "both"), default="both")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (2_000, 2) if args.quick else (args.tasks, args.rounds)
    bare, real = args.app != "realistic", args.app != "bare"
    celery = {**(CELERY if bare else {}), **(REALISTIC_CELERY if real else {})}
    variants = {**(VARIANTS if bare else {}), **(REALISTIC_VARIANTS if real else {})}
    rates: dict[str, list[float]] = {}
    worst: dict[str, tuple[float, float]] = {}
    try:
        for _ in range(rounds):
            round_rates, stalls = asyncio.run(_round(n, celery, variants))
            for system, rate in round_rates.items():
                rates.setdefault(system, []).append(rate)
            for system, (longest, outside) in stalls.items():
                before = worst.get(system, (0.0, 0.0))
                worst[system] = (max(before[0], longest), max(before[1], outside))
    finally:
        for celery_app in _celery_apps(celery, variants):
            delete_queue(celery_app, celery_app.conf.task_default_queue)
        realistic_plain.cleanup()
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"publish: {n} messages each way, one producer, RabbitMQ, {rounds} round(s)")
    if bare:
        _report(median, worst, CELERY, VARIANTS, "celery apply_async")
        for mode in ("push one by one", "push 100 at a time"):
            cost = 1 - median[f"{mode}, confirms"] / median[mode]
            print(f"  confirms cost ({mode}): {cost * 100:.0f}% of throughput")
        confirmed = median["celery apply_async, confirm_publish"]
        print(
            "  confirmed push one by one vs confirmed apply_async: "
            f"x{median['push one by one, confirms'] / confirmed:.2f}"
        )
    if real:
        print("  realistic app (two outer middlewares, request_state, a dataclass, x-expires):")
        real_base = "celery apply_async, realistic"
        _report(median, worst, REALISTIC_CELERY, REALISTIC_VARIANTS, real_base)
        print(
            "  realistic push one by one vs apply_async: "
            f"x{median['push one by one, realistic'] / median[real_base]:.2f}"
            " (goal >= 0.95)"
        )


def _report(
    median: dict[str, float],
    worst: dict[str, tuple[float, float]],
    celery: dict[str, Any],
    variants: dict[str, Any],
    baseline: str,
) -> None:
    base = median[baseline]
    for name in celery:
        print(f"  {name:36} {median[name]:8.0f} msg/s  x{median[name] / base:.2f}")
    for name in variants:
        longest, outside = worst[name]
        print(
            f"  {'jobify ' + name:36} {median[name]:8.0f} msg/s  x{median[name] / base:.2f}"
            f"  longest loop stall {longest * 1000:.1f} ms"
            f" ({outside * 1000:.1f} ms of the loop's own work)"
        )


if __name__ == "__main__":
    main()
