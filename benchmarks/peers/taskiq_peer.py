"""Taskiq with taskiq-aio-pika on RabbitMQ, as a peer to compare the asyncio pool with.

    python -m benchmarks.peers.taskiq_peer [--jobs 5000] [--in-flight 1000] [--runs 2]

The worker is ``taskiq worker benchmarks.peers.taskiq_peer:broker --workers 1
--max-async-tasks IN_FLIGHT``. The broker reads its names from the environment
(``TASKIQ_PEER_QUEUE``, ``TASKIQ_PEER_EXCHANGE``, ``TASKIQ_PEER_DEAD_LETTER``),
so each run declares its own queue, exchange and dead-letter queue, and deletes
them afterwards. taskiq-aio-pika declares quorum queues unless told otherwise
(``TASKIQ_PEER_QUEUE_TYPE``) and lets RabbitMQ deliver only ``qos`` unacknowledged
messages (10 unless told): ``TASKIQ_PEER_PREFETCH`` sets it to the jobs in flight.
No result backend is set, so taskiq keeps its dummy one and stores no results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from taskiq.kicker import AsyncKicker
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType

from benchmarks.peers import _common

TASK_NAME = "benchmarks.peers.taskiq_peer:job"


@dataclass(frozen=True)
class Names:
    queue: str = field(default_factory=lambda: os.environ.get("TASKIQ_PEER_QUEUE", "taskiq-peer"))
    exchange: str = field(
        default_factory=lambda: os.environ.get("TASKIQ_PEER_EXCHANGE", "taskiq-peer")
    )
    dead_letter: str = field(
        default_factory=lambda: os.environ.get("TASKIQ_PEER_DEAD_LETTER", "taskiq-peer.dead")
    )

    @classmethod
    def unique(cls) -> Names:
        suffix = _common.run_suffix()
        return cls(f"taskiq-peer-{suffix}", f"taskiq-peer-{suffix}", f"taskiq-peer-{suffix}.dead")

    def env(self) -> dict[str, str]:
        return {
            "TASKIQ_PEER_QUEUE": self.queue,
            "TASKIQ_PEER_EXCHANGE": self.exchange,
            "TASKIQ_PEER_DEAD_LETTER": self.dead_letter,
        }


def make_broker(names: Names, *, prefetch: int, queue_type: QueueType) -> AioPikaBroker:
    return AioPikaBroker(
        url=_common.BROKER_URL,
        qos=prefetch,
        exchange=Exchange(name=names.exchange),
        task_queues=[Queue(name=names.queue, type=queue_type)],
        dead_letter_queue=Queue(name=names.dead_letter, type=queue_type),
    )


broker = make_broker(
    Names(),
    prefetch=int(os.environ.get("TASKIQ_PEER_PREFETCH", "1000")),
    queue_type=QueueType(os.environ.get("TASKIQ_PEER_QUEUE_TYPE", "quorum")),
)


@broker.task(task_name=TASK_NAME)
async def job() -> None:
    await _common.job_body()


def run(n: int = 5000, in_flight: int = 1000, *, queue_type: str = "quorum") -> dict[str, Any]:
    names = Names.unique()
    kind = QueueType(queue_type)

    async def publish() -> int:
        publisher = make_broker(names, prefetch=in_flight, queue_type=kind)
        await publisher.startup()
        try:
            kicker: AsyncKicker[[], Any] = AsyncKicker(TASK_NAME, publisher, {})
            for start in range(0, n, 500):
                await asyncio.gather(*(kicker.kiq() for _ in range(start, n)[:500]))
        finally:
            await publisher.shutdown()
        return await _common.queue_depth(names.queue)

    async def cleanup() -> None:
        await _common.delete_amqp([names.queue, names.dead_letter], [names.exchange])

    command = [
        sys.executable, "-m", "taskiq", "worker", "benchmarks.peers.taskiq_peer:broker",
        "--workers", "1", "--max-async-tasks", str(in_flight), "--log-level", "WARNING",
    ]  # fmt: skip
    return _common.measure(
        system="taskiq",
        n=n,
        command=command,
        env={
            **names.env(),
            "TASKIQ_PEER_PREFETCH": str(in_flight),
            "TASKIQ_PEER_QUEUE_TYPE": kind.value,
            "PEER_COUNTER_KEY": f"peer-counter-{names.queue}",
        },
        publish=publish,
        cleanup=cleanup,
        notes=(
            f"taskiq worker --workers 1 --max-async-tasks {in_flight} (a parent and one"
            f" worker process), {kind.value} queue, AMQP prefetch {in_flight}, acks after"
            " the result step (ack type when_saved), no result backend (results not stored)."
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--queue-type", default="quorum", choices=["quorum", "classic"])
    args = parser.parse_args()
    for _ in range(args.runs):
        print(json.dumps(run(args.jobs, args.in_flight, queue_type=args.queue_type)), flush=True)


if __name__ == "__main__":
    main()
