"""The plain Celery half of the realistic benchmark pair (see ``benchmarks.realistic``).

No Jobify here, so that its worker runs Celery alone. It does the same user
work as the realistic Jobify app the way a Celery app does: the tenant in a
custom message header, the order as a dict turned into the same dataclass,
one Redis ``INCR`` with the same sync client (one per process), the receipt
returned as a dict of plain JSON values, on a queue declared with the same
``x-expires``. ``BENCH_PLAIN_ACKS_LATE=1`` makes it acknowledge late, as
jobify-celery does by default.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from kombu import Queue

from benchmarks._celery import bench_celery_app

_BASE = os.environ.get("BENCH_QUEUE", "jobify-celery-bench")
QUEUE = f"{_BASE}.real"
PLAIN_QUEUE = f"{_BASE}.real-plain"
#: Queues unused for an hour go away (the shape many deployments declare).
EXPIRES_MS = 3_600_000
COUNTER = f"{_BASE}.real-counter"
DB = os.environ.get("BENCH_REAL_DB") or str(Path(tempfile.gettempdir()) / f"{_BASE}-real.db")
TENANT = "acme"


def declared_queue(name: str) -> Queue:
    return Queue(name, queue_arguments={"x-expires": EXPIRES_MS})


@dataclass(frozen=True, slots=True)
class Order:
    order_id: int
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Receipt:
    order_id: int
    tenant: str
    total: Decimal
    placed: int


ORDER = Order(order_id=7, sku="book-12", quantity=3, unit_price=Decimal("12.50"))

_ACKS_LATE = os.environ.get("BENCH_PLAIN_ACKS_LATE") == "1"
plain_app = bench_celery_app(
    "bench_real_plain",
    PLAIN_QUEUE,
    # The drain runs it twice, acking early and late, each on its own queue.
    task_queues=[declared_queue(PLAIN_QUEUE + suffix) for suffix in ("", ".early", ".late")],
    task_acks_late=_ACKS_LATE,
    task_reject_on_worker_lost=_ACKS_LATE,
)


@functools.cache
def _redis(pid: int) -> redis.Redis:
    """This worker process's Redis client (keyed by pid: a forked child makes its own)."""
    del pid
    return redis.Redis.from_url(plain_app.conf.result_backend)


@plain_app.task(bind=True, name="orders.plain_place", shared=False)
def plain_place(self: Any, order: dict[str, Any]) -> dict[str, Any]:
    typed = Order(
        order_id=order["order_id"],
        sku=order["sku"],
        quantity=order["quantity"],
        unit_price=Decimal(order["unit_price"]),
    )
    placed = int(_redis(os.getpid()).incr(COUNTER))
    receipt = Receipt(
        order_id=typed.order_id,
        tenant=self.request.tenant,
        total=typed.unit_price * typed.quantity,
        placed=placed,
    )
    return {
        "order_id": receipt.order_id,
        "tenant": receipt.tenant,
        "total": str(receipt.total),
        "placed": receipt.placed,
    }


PLAIN_ORDER = {
    "order_id": ORDER.order_id,
    "sku": ORDER.sku,
    "quantity": ORDER.quantity,
    "unit_price": str(ORDER.unit_price),
}


def plain_publish(**options: Any) -> Any:
    """Publish one plain order the way a Celery app passes metadata: a header."""
    return plain_place.apply_async((PLAIN_ORDER,), headers={"tenant": TENANT}, **options)


def cleanup() -> None:
    """Remove the shared SQLite file and the counter (after a benchmark)."""
    for suffix in ("", "-shm", "-wal"):
        Path(DB + suffix).unlink(missing_ok=True)
    client = redis.Redis.from_url(plain_app.conf.result_backend)
    try:
        client.delete(COUNTER)
    finally:
        client.close()
