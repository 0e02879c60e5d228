"""``charge`` on a worker in the test process, and eagerly (no worker, no broker)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from examples.shop.tasks import Receipt, charge
from jobify_celery.testing import eager

if TYPE_CHECKING:
    from jobify import Job

    from jobify_celery.testing import AppThread


async def charge_and_wait(order_id: int, items: list[str]) -> tuple[Job[Receipt], Receipt]:
    job = await charge.push(order_id, items)
    return job, await job


@pytest.mark.usefixtures("jobify_worker")
def test_charge_runs_on_a_worker(jobify_producer: AppThread) -> None:
    job, receipt = jobify_producer.run(charge_and_wait(42, ["book", "pen"]))
    assert receipt == Receipt(42, Decimal("13.70"), f"req-{job.id[:8]}")


def test_charge_runs_eagerly(jobify_producer: AppThread) -> None:
    with eager(jobify_producer.app):
        job, receipt = jobify_producer.run(charge_and_wait(7, ["pen"]))
    assert receipt.total == Decimal("1.20")
    assert receipt.request_id == f"req-{job.id[:8]}"  # the outer middleware ran too
