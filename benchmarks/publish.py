"""Publish: ``push()`` (one outer middleware) beside ``apply_async``, one producer process.

    python -m benchmarks.publish [--tasks 20000] [--rounds 3] [--quick]

Five ways to publish N messages, in alternating chunks of 500 so that the
machine's stalls hit all alike:

* ``celery``: ``apply_async``, one after another (blocking; no confirms: it
  returns once the message is written to the socket), and the same with
  Celery's own publisher confirms (``confirm_publish``: the guarantee a
  confirmed push gives);
* ``push one by one``: ``await push()`` one after another, with publisher
  confirms (the default), and without them (``publish_confirms=False``);
* ``push 100 at a time``: 100 pushes in flight at once (a web app serving
  concurrent requests), with and without confirms.

For each push variant it also reports the event loop's longest stall: how
late a 1 ms timer fired while the pushes ran (``apply_async`` blocks the loop
for its whole call, so it has none to report). No worker consumes; queues are
purged after each round. Both sides keep following what they published for
the whole round, as a producer does until results arrive: the pushed jobs in
the app, the ``AsyncResult`` of each ``apply_async`` in a list. (So both pay
for the heap they grow: Python's full garbage collections are the long loop
stalls reported.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-{os.getpid()}")

from jobify import Jobify

from benchmarks import apps, plain
from benchmarks._celery import bench_celery_app
from benchmarks._worker import delete_queue, purge
from jobify_celery import JobifyCelery

CHUNK = 500
IN_FLIGHT = 100

confirmed_plain = bench_celery_app(
    "bench_plain_confirmed",
    f"{plain.QUEUE}.confirmed",
    broker_transport_options={"confirm_publish": True},
)


@confirmed_plain.task(name="bench.plain_noop")
def confirmed_plain_noop() -> None:
    return None


unconfirmed_celery = bench_celery_app("bench_unconfirmed", f"{apps.QUEUE}.unconfirmed")
unconfirmed = Jobify(storage=False, outer_middleware=[apps.PassThrough()])
JobifyCelery(unconfirmed, unconfirmed_celery, publish_confirms=False)


@unconfirmed.task(name="bench.jobify_noop")
async def unconfirmed_noop() -> None:
    return None


class _Stalls:
    """The longest delay of a 1 ms timer while it runs."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.001)
            self.longest = max(self.longest, loop.time() - started - 0.001)


async def _one_by_one(route: Any, count: int) -> None:
    for _ in range(count):
        await route.push()


async def _in_flight(route: Any, count: int) -> None:
    for start in range(0, count, IN_FLIGHT):
        await asyncio.gather(*(route.push() for _ in range(min(IN_FLIGHT, count - start))))


VARIANTS = {
    "push one by one": (apps.jobify_noop, _one_by_one),
    "push one by one, no confirms": (unconfirmed_noop, _one_by_one),
    "push 100 at a time": (apps.jobify_noop, _in_flight),
    "push 100 at a time, no confirms": (unconfirmed_noop, _in_flight),
}


CELERY = {"celery": plain.plain_noop, "celery, confirm_publish": confirmed_plain_noop}


async def _round(n: int) -> tuple[dict[str, float], dict[str, float]]:
    spent = dict.fromkeys([*CELERY, *VARIANTS], 0.0)
    stalls = dict.fromkeys(VARIANTS, 0.0)
    followed: list[Any] = []
    async with apps.app, unconfirmed:
        # Connections made and queues declared before the clock runs.
        for task in CELERY.values():
            task.apply_async()
        for route, _ in VARIANTS.values():
            await route.push()
        done = 0
        while done < n:
            chunk = min(CHUNK, n - done)
            for name, task in CELERY.items():
                started = time.perf_counter()
                followed.extend(task.apply_async() for _ in range(chunk))
                spent[name] += time.perf_counter() - started
            for name, (route, publish) in VARIANTS.items():
                meter = _Stalls()
                meter.start()
                started = time.perf_counter()
                await publish(route, chunk)
                spent[name] += time.perf_counter() - started
                meter.stop()
                stalls[name] = max(stalls[name], meter.longest)
            done += chunk
    followed.clear()
    purge(plain.celery_app, plain.QUEUE)
    purge(confirmed_plain, f"{plain.QUEUE}.confirmed")
    purge(apps.celery_app, apps.QUEUE)
    purge(unconfirmed_celery, f"{apps.QUEUE}.unconfirmed")
    return {system: n / seconds for system, seconds in spent.items()}, stalls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (2_000, 2) if args.quick else (args.tasks, args.rounds)
    rates: dict[str, list[float]] = {}
    worst: dict[str, float] = {}
    for _ in range(rounds):
        round_rates, stalls = asyncio.run(_round(n))
        for system, rate in round_rates.items():
            rates.setdefault(system, []).append(rate)
        for system, stall in stalls.items():
            worst[system] = max(worst.get(system, 0.0), stall)
    delete_queue(plain.celery_app, plain.QUEUE)
    delete_queue(confirmed_plain, f"{plain.QUEUE}.confirmed")
    delete_queue(apps.celery_app, apps.QUEUE)
    delete_queue(unconfirmed_celery, f"{apps.QUEUE}.unconfirmed")
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"publish: {n} messages each way, one producer, RabbitMQ, {rounds} round(s)")
    print(f"  {'celery apply_async':34} {median['celery']:8.0f} msg/s")
    confirmed = median["celery, confirm_publish"]
    print(f"  {'celery apply_async, confirm_publish':34} {confirmed:8.0f} msg/s")
    for name in VARIANTS:
        print(
            f"  {'jobify ' + name:34} {median[name]:8.0f} msg/s  "
            f"x{median[name] / median['celery']:.2f} of apply_async  "
            f"longest loop stall {worst[name] * 1000:.1f} ms"
        )
    for mode in ("push one by one", "push 100 at a time"):
        cost = 1 - median[mode] / median[f"{mode}, no confirms"]
        print(f"  confirms cost ({mode}): {cost * 100:.0f}% of throughput")
    print(
        "  confirmed push one by one vs confirmed apply_async: "
        f"x{median['push one by one'] / confirmed:.2f}"
    )


if __name__ == "__main__":
    main()
