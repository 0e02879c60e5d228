"""An asyncio producer: push jobs, await their results from the workers.

python -m examples.shop.producer
"""

from __future__ import annotations

import asyncio

from examples.shop.tasks import app, charge


async def main() -> None:
    async with app:
        job = await charge.push(42, ["book", "pen"])
        receipt = await job
        print(f"job {job.id} {job.status}: {receipt}")


if __name__ == "__main__":
    asyncio.run(main())
