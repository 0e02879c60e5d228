"""Run every benchmark, plain Celery beside jobify-celery, and print the ratios.

    python -m benchmarks [--quick]

Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 (or BROKER_URL /
RESULT_BACKEND). The full run takes about 45 minutes (beat precision alone is
10, cron_scale 15); ``--quick`` takes a few.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = (
    "drain",
    "async_io",
    "publish",
    "roundtrip",
    "many_waiters",
    "memory",
    "delay_lateness",
    "beat_precision",
    "cron_scale",
)


def main() -> int:
    extra = sys.argv[1:]
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        code = subprocess.call(
            [sys.executable, "-m", f"benchmarks.{name}", *extra],
            stderr=subprocess.DEVNULL,
        )
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
