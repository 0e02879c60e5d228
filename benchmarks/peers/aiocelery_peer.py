"""aio-celery (Celery's message protocol on aio-pika) as a peer to compare the asyncio pool with.

    python -m benchmarks.peers.aiocelery_peer [--jobs 5000] [--in-flight 1000] [--runs 2]
        [--results] [--prefetch-multiplier 4]

The worker is ``python -m aio_celery worker benchmarks.peers.aiocelery_peer:app
-Q QUEUE -c IN_FLIGHT``. The app reads its queue from ``AIOCELERY_PEER_QUEUE``
(a classic durable queue, declared by the first publish), so each run has its
own queue and deletes it afterwards. RabbitMQ may deliver
``worker_prefetch_multiplier`` (4 by default) times ``-c`` messages ahead; past
``-c`` they wait on the worker's semaphore. The worker always binds its inspection
HTTP server's socket, serving or not: ``AIOCELERY_PEER_INSPECT_PORT`` (0 here,
a free port) keeps runs from fighting over port 1430. aio-celery stores results
only once ``result_backend`` is set; ``AIOCELERY_PEER_RESULT_BACKEND`` (or
``--results``) sets it to the counter's Redis, and the run deletes the
``celery-task-meta-*`` keys it caused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import redis.asyncio as aioredis
from aio_celery import Celery

from benchmarks.peers import _common

TASK_NAME = "benchmarks.peers.aiocelery_peer.job"

app = Celery("aiocelery_peer")
app.conf.update(
    broker_url=_common.BROKER_URL,
    task_default_queue=os.environ.get("AIOCELERY_PEER_QUEUE", "aiocelery-peer"),
    inspection_http_server_is_enabled=False,
    inspection_http_server_host="127.0.0.1",
    inspection_http_server_port=int(os.environ.get("AIOCELERY_PEER_INSPECT_PORT", "0")),
    result_backend=os.environ.get("AIOCELERY_PEER_RESULT_BACKEND") or None,
    worker_prefetch_multiplier=int(os.environ.get("AIOCELERY_PEER_PREFETCH_MULTIPLIER", "4")),
)


@app.task(name=TASK_NAME)
async def job() -> None:
    await _common.job_body()


def run(
    n: int = 5000, in_flight: int = 1000, *, results: bool = False, prefetch_multiplier: int = 4
) -> dict[str, Any]:
    queue = f"aiocelery-peer-{_common.run_suffix()}"
    task_ids: list[str] = []

    async def publish() -> int:
        publisher = Celery("aiocelery_peer_publisher")
        publisher.conf.update(broker_url=_common.BROKER_URL)
        async with publisher.setup():
            for start in range(0, n, 500):
                batch = (publisher.send_task(TASK_NAME, queue=queue) for _ in range(start, n)[:500])
                sent = await asyncio.gather(*batch)
                task_ids.extend(result.id for result in sent)
        return await _common.queue_depth(queue)

    async def cleanup() -> None:
        await _common.delete_amqp([queue])
        if results and task_ids:
            client = aioredis.Redis.from_url(_common.REDIS_URL)
            try:
                for start in range(0, len(task_ids), 1000):
                    chunk = task_ids[start : start + 1000]
                    await client.delete(*(f"celery-task-meta-{task_id}" for task_id in chunk))
            finally:
                await client.aclose()

    command = [
        sys.executable, "-m", "aio_celery", "worker", "benchmarks.peers.aiocelery_peer:app",
        "-Q", queue, "-c", str(in_flight), "-l", "WARNING",
    ]  # fmt: skip
    return _common.measure(
        system="aio-celery",
        n=n,
        command=command,
        env={
            "AIOCELERY_PEER_QUEUE": queue,
            "AIOCELERY_PEER_INSPECT_PORT": "0",
            "AIOCELERY_PEER_RESULT_BACKEND": _common.REDIS_URL if results else "",
            "AIOCELERY_PEER_PREFETCH_MULTIPLIER": str(prefetch_multiplier),
            "PEER_COUNTER_KEY": f"peer-counter-{queue}",
        },
        publish=publish,
        cleanup=cleanup,
        notes=(
            f"aio_celery worker -c {in_flight} (one process), classic durable queue, AMQP"
            f" prefetch {min(prefetch_multiplier * in_flight, 65535)}"
            f" (worker_prefetch_multiplier {prefetch_multiplier}),"
            " acks after the job, "
            + (
                "results stored in Redis (result_backend set, one SET per job)."
                if results
                else "no result backend (its default: results not stored)."
            )
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--results", action="store_true")
    parser.add_argument("--prefetch-multiplier", type=int, default=4)
    args = parser.parse_args()
    for _ in range(args.runs):
        result = run(
            args.jobs,
            args.in_flight,
            results=args.results,
            prefetch_multiplier=args.prefetch_multiplier,
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
