"""Create the test suite's PostgreSQL database if it does not exist yet.

    python scripts/postgres_db.py [URL]

URL (default: $POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/jobify_celery_test)
names the database; the script connects to the server's ``postgres`` database
to create it. Prints what it did; exits non-zero with the reason if it cannot.
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT = "postgresql://postgres@127.0.0.1:5432/jobify_celery_test"


async def main(url: str) -> int:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum():
        print(f"error: not a plain database name in {url!r}", file=sys.stderr)
        return 2
    admin = urlunsplit(parts._replace(path="/postgres"))
    try:
        connection = await asyncpg.connect(admin, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: PostgreSQL does not answer at {admin}: {exc}", file=sys.stderr)
        return 1
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            print(f"PostgreSQL database {name!r} is there")
        else:
            await connection.execute(f'CREATE DATABASE "{name}"')
            print(f"created PostgreSQL database {name!r}")
    finally:
        await connection.close()
    return 0


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("POSTGRES_URL", DEFAULT)
    raise SystemExit(asyncio.run(main(target)))
