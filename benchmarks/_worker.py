"""Start and stop a `celery worker` for a benchmark run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running_worker(
    celery_app: Celery, queue: str, pool: str = "prefork", concurrency: int = 2
) -> Iterator[subprocess.Popen[bytes]]:
    node = f"{queue}-{pool}-{os.getpid()}@bench"
    env = {**os.environ, "BENCH_QUEUE": queue, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.apps:celery_app", "worker",
        "-P", pool, "-c", str(concurrency), "-Q", queue, "-n", node, "-l", "warning",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(destination=[node], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("benchmark worker did not start")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
