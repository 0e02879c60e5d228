"""A producer process for the cron tests: adds, replaces or cancels run-time crons.

    python -m tests.apps.cron_producer AT OP JOB_ID LABEL [OP JOB_ID LABEL ...]

Starts the clock app (``CLOCK_DB``/``CLOCK_TABLE``: the storage), waits until
the POSIX time ``AT`` (so that several producers act at one moment), then does
each operation on ``labelled``'s every-second cron: ``add`` (refused for an id
already stored), ``replace`` (``replace=True``) or ``cancel`` (replace, then
cancel: a cron is cancelled through its ``Job``); ``CRON_PRODUCER_FEED=off``
announces nothing on the cron feed. Prints one JSON line: each
operation's outcome (``added``, ``duplicate``, ``replaced``, ``cancelled``)
and when it ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from jobify.exceptions import DuplicateJobError

from jobify_celery import _producer
from tests.apps import clock

EVERY_SECOND = "* * * * * * *"


async def operate(op: str, job_id: str, label: str) -> str:
    schedule = clock.labelled.schedule(label)
    if op == "add":
        try:
            await schedule.cron(EVERY_SECOND, job_id=job_id)
        except DuplicateJobError:
            return "duplicate"
        return "added"
    job = await schedule.cron(EVERY_SECOND, job_id=job_id, replace=True, force=True)
    if op == "replace":
        return "replaced"
    await job.cancel()
    return "cancelled"


async def main(at: float, operations: list[str]) -> dict[str, Any]:
    outcomes = []
    async with clock.app:
        await asyncio.sleep(max(0.0, at - time.time()))
        for index in range(0, len(operations), 3):
            op, job_id, label = operations[index : index + 3]
            outcomes.append(await operate(op, job_id, label))
            outcomes.append(time.time())
    return {"outcomes": outcomes[::2], "ended": outcomes[1::2]}


if __name__ == "__main__":
    if os.environ.get("CRON_PRODUCER_FEED") == "off":
        # A lost announcement: the storage is written, beat is not told.
        _producer.feed_for = lambda _celery_app: None  # type: ignore[assignment]
    print(json.dumps(asyncio.run(main(float(sys.argv[1]), sys.argv[2:]))))  # noqa: T201
