"""Start and stop `celery worker` processes, and measure them, for benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kombu import Connection

if TYPE_CHECKING:
    from collections.abc import Iterator

    from celery import Celery

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running_worker(
    celery_app: Celery,
    queue: str,
    *,
    app_path: str = "benchmarks.apps:celery_app",
    pool: str = "prefork",
    concurrency: int = 2,
    consume: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A worker for ``queue`` (or, with ``consume=False``, idle until told).

    Its output goes to a log file, kept (and named) only if it fails to start.
    """
    node = f"{queue}-{pool}-{os.getpid()}-{time.monotonic_ns()}@bench"
    idle_queue = f"{queue}.idle"
    # The apps derive their queue names from the parent's BENCH_QUEUE.
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [
        sys.executable, "-m", "celery", "-A", app_path, "worker",
        "-P", pool, "-c", str(concurrency), "-Q", queue if consume else idle_queue,
        "-n", node, "-l", "warning",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    started = False
    try:
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(destination=[node], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                msg = f"benchmark worker did not start; its output: {log.name}"
                raise RuntimeError(msg)
        started = True
        yield process, node
    finally:
        log.close()
        if started:
            Path(log.name).unlink(missing_ok=True)
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if not consume:
            delete_queue(celery_app, idle_queue)


class QueueDepth:
    """Reads queue depths over one broker connection, for polling loops."""

    def __init__(self, celery_app: Celery) -> None:
        self._conn = Connection(celery_app.conf.broker_url)
        self._channel = self._conn.channel()

    def __call__(self, queue: str) -> int:
        _, count, _ = self._channel.queue_declare(queue, passive=True)
        return int(count)

    def close(self) -> None:
        self._conn.close()


@contextlib.contextmanager
def both_workers() -> Iterator[None]:
    """A prefork worker for each side: plain Celery's queue and jobify-celery's."""
    from benchmarks import apps, plain  # noqa: PLC0415 - the apps read BENCH_QUEUE at import

    with running_worker(plain.celery_app, plain.QUEUE, app_path="benchmarks.plain:celery_app"), \
         running_worker(apps.celery_app, apps.QUEUE):  # fmt: skip
        yield


def purge(celery_app: Celery, queue: str) -> None:
    with Connection(celery_app.conf.broker_url) as conn, contextlib.suppress(Exception):
        conn.channel().queue_purge(queue)


def delete_queue(celery_app: Celery, queue: str) -> None:
    with Connection(celery_app.conf.broker_url) as conn, contextlib.suppress(Exception):
        conn.channel().queue_delete(queue)


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """Every process's pid and its /proc stat fields after the command (state first)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry.name), fields


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for member, fields in process_stats():
        children.setdefault(int(fields[1]), []).append(member)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of a process and of its descendants, in seconds."""
    own, descendants = 0.0, 0.0
    for member in tree_pids(pid):
        if member == pid:
            own += cpu_seconds(member)
        else:
            descendants += cpu_seconds(member)
    return own, descendants


#: The local servers every benchmark message passes through (RabbitMQ, Redis).
SERVER_COMMANDS = ("beam.smp", "redis-server")


def server_pids() -> list[int]:
    """The local RabbitMQ and Redis server processes (empty if they run elsewhere)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if command in SERVER_COMMANDS:
            found.append(int(entry.name))
    return found


def tree_pss_kib(pid: int) -> int:
    """Proportional set size of a process tree, in KiB (shared pages split)."""
    total = 0
    for member in tree_pids(pid):
        try:
            text = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
