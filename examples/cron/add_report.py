"""Add (or replace) a cron while beat runs; beat picks it up within a second.

python -m examples.cron.add_report [--cancel]
"""

from __future__ import annotations

import asyncio
import sys

from examples.cron.tasks import app, report


async def main() -> None:
    async with app:
        job = await report.schedule("sales").cron(
            "*/5 * * * * * *", job_id="sales-report", replace=True
        )
        print(f"cron {job.id} scheduled, first run at {job.exec_at.isoformat()}")
        if "--cancel" in sys.argv:
            await job.cancel()
            print(f"cron {job.id} cancelled")


if __name__ == "__main__":
    asyncio.run(main())
