"""Drive the FastAPI example with httpx in-process (its lifespan too); print what it answers.

Run as ``python -m tests.drive_fastapi`` with ``SHOP_QUEUE`` set, against a
worker for that queue: the test reads the JSON this prints.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from examples.fastapi_app.main import api


async def main() -> None:
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            now = await client.post("/orders/42/charge", json={"items": ["book", "pen"]})
            later = await client.post("/orders/7/charge-later", json={"items": ["pen"]})
            job_id = later.json()["job_id"]
            state: dict[str, object] = {}
            for _ in range(200):
                state = (await client.get(f"/jobs/{job_id}")).json()
                if state["state"] == "SUCCESS":
                    break
                await asyncio.sleep(0.05)
            bad = await client.post("/orders/1/charge", json={"items": "not a list"})
    print(  # noqa: T201 - what the test reads
        json.dumps(
            {
                "now": [now.status_code, now.json()],
                "later": [later.status_code, later.json()],
                "state": state,
                "bad": bad.status_code,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
