"""What both peer benchmarks share: the job's body, the worker's process group, the clock.

The job sleeps 50 ms, then increments a Redis counter through redis.asyncio with a
``BlockingConnectionPool`` of 50 connections (the plain pool raises past its cap).
The harness publishes N jobs with no worker running, starts one worker in a new
session (so its process group is its own), and watches the counter from the
parent: the clock runs from the first poll that sees it above zero to the poll
that sees it reach N, and the worker group's CPU time is read at both moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import redis
import redis.asyncio as aioredis

from benchmarks._worker import process_stats

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0")
#: The Redis key the jobs increment (the harness picks one per run).
COUNTER_KEY = os.environ.get("PEER_COUNTER_KEY", "peer-bench-counter")
JOB_SLEEP = 0.05
POOL_SIZE = 50
POLL_INTERVAL = 0.002
#: How long a worker may take to finish its first job, and then to make any progress.
START_TIMEOUT = 60.0
STALL_TIMEOUT = 30.0


@functools.cache
def counter_client() -> aioredis.Redis:
    """One client per process; its connections open lazily on the worker's loop."""
    pool = aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=POOL_SIZE)
    return aioredis.Redis(connection_pool=pool)


async def job_body() -> None:
    await asyncio.sleep(JOB_SLEEP)
    await counter_client().incr(COUNTER_KEY)


def run_suffix() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _group_stats(pgid: int) -> list[list[str]]:
    """The /proc/<pid>/stat fields (after the command) of each process in a group."""
    return [fields for _, fields in process_stats() if int(fields[2]) == pgid]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the processes of a group, plus the children they reaped.

    /proc/<pid>/stat counts every thread of the process; cutime and cstime add
    the members that already exited and were waited for, so the total only grows.
    """
    ticks = sum(int(value) for fields in _group_stats(pgid) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies do not count)."""
    return any(fields[0] != "Z" for fields in _group_stats(pgid))


def stop_group(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGINT to the whole group (both peers stop on it), then SIGKILL to what is left."""
    pgid = process.pid
    try:
        os.killpg(pgid, signal.SIGINT)
        process.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    deadline = time.monotonic() + 10
    while group_alive(pgid):
        if time.monotonic() > deadline:
            msg = f"process group {pgid} survived SIGKILL"
            raise RuntimeError(msg)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)
    process.wait(10)


def _watch(process: subprocess.Popen[bytes], key: str, n: int) -> tuple[int, int, float, float]:
    """Poll the counter; return (count at start, count at end, seconds, CPU seconds)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        started = time.monotonic()
        first = 0
        while not first:
            first = int(client.get(key) or 0)
            if not first:
                if process.poll() is not None or time.monotonic() - started > START_TIMEOUT:
                    return 0, 0, 0.0, 0.0
                time.sleep(POLL_INTERVAL)
        t0 = time.perf_counter()
        cpu0 = group_cpu_seconds(process.pid)
        last, last_change = first, t0
        while True:
            count = int(client.get(key) or 0)
            now = time.perf_counter()
            if count >= n:
                break
            if count != last:
                last, last_change = count, now
            elif now - last_change > STALL_TIMEOUT or process.poll() is not None:
                break
            time.sleep(POLL_INTERVAL)
        cpu1 = group_cpu_seconds(process.pid)
        return first, count, now - t0, cpu1 - cpu0
    finally:
        client.close()


def measure(
    *,
    system: str,
    n: int,
    command: Sequence[str],
    env: dict[str, str],
    publish: Callable[[], Coroutine[Any, Any, int]],
    cleanup: Callable[[], Coroutine[Any, Any, None]],
    notes: str,
) -> dict[str, Any]:
    """Publish, run one worker until the counter reaches ``n``, stop it, clean up.

    ``publish`` queues the jobs and returns the queue's depth afterwards;
    ``cleanup`` deletes what the run declared on the broker (and any result keys).
    """
    key = env["PEER_COUNTER_KEY"]
    client = redis.Redis.from_url(REDIS_URL)
    log = tempfile.NamedTemporaryFile(prefix=f"peer-{system}-", suffix=".log", delete=False)  # noqa: SIM115
    keep_log = True
    try:
        client.delete(key)
        queued = asyncio.run(publish())
        if queued != n:
            msg = f"{queued} of {n} jobs queued before the worker started"
            raise RuntimeError(msg)
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            first, count, seconds, cpu = _watch(process, key, n)
        finally:
            stop_group(process)
        done = int(client.get(key) or 0)
        measured = count - first
        keep_log = done != n
        if keep_log:
            notes += f" Incomplete run: worker output kept in {log.name}."
        return {
            "system": system,
            "jobs": n,
            "done": done,
            "seconds": round(seconds, 3),
            "jobs_per_s": round(measured / seconds, 1) if seconds else 0.0,
            "cpu_ms_per_job": round(cpu * 1000 / measured, 4) if measured else 0.0,
            "notes": (
                f"{notes} Clock and CPU cover jobs {first + 1}..{count} "
                f"({measured} jobs) of the counter."
            ),
        }
    finally:
        log.close()
        if not keep_log:
            Path(log.name).unlink(missing_ok=True)
        client.delete(key)
        client.close()
        asyncio.run(cleanup())


async def queue_depth(queue: str) -> int:
    connection = await aio_pika.connect(BROKER_URL)
    async with connection, connection.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def delete_amqp(queues: Sequence[str], exchanges: Sequence[str] = ()) -> None:
    """Delete queues and exchanges; a missing one closes only its own channel."""
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        for queue in queues:
            async with connection.channel() as channel:
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    await channel.queue_delete(queue)
        for exchange in exchanges:
            async with connection.channel() as channel:
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    await channel.exchange_delete(exchange)
