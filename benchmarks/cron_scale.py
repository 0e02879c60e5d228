"""Run-time crons at scale: adds, beat's idle cost and precision, a burst of due crons.

    python -m benchmarks.cron_scale [--crons 100000] [--burst 10000] [--seconds 600] [--quick]

With ``--crons`` yearly run-time crons stored (SQLite, as one host keeps them):

* adds: ``schedule(...).cron(...)`` one after another from a producer, p50/p99,
  beside what the former way cost per add (reading every stored record);
* beat (``celery beat``, ``--max-interval 1``) with those crons and a 1 s cron:
  how long it takes to read them at start, its memory (PSS), its CPU while
  idle, and the 1 s cron's publish lateness (p50/p99/max, drift) over
  ``--seconds``;
* then ``--burst`` crons all due on one second, announced on the cron feed:
  how long after that second the last one is published, in planned order,
  none twice (read back from their queue).

Needs RabbitMQ and Redis (``BROKER_URL``/``RESULT_BACKEND``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_QUEUE", f"jobify-celery-bench-cron-{os.getpid()}")
os.environ.setdefault("BENCH_BURST_QUEUE", f"{os.environ['BENCH_QUEUE']}.burst")
os.environ.setdefault(
    "BENCH_BEAT_DB", str(Path(tempfile.gettempdir()) / f"cron-scale-{os.getpid()}.db")
)

import redis
from jobify import Cron
from kombu import Connection

from benchmarks import apps
from benchmarks._worker import delete_queue, percentile, tree_cpu_seconds, tree_pss_kib
from jobify_celery._cron_feed import feed_for
from jobify_celery._jobify import cron_record, route_by_name

ROOT = Path(__file__).resolve().parents[1]
YEARLY = Cron("0 0 0 1 1 * *")


def _records(count: int, prefix: str, cron: Cron, name: str, next_run: datetime) -> list[Any]:
    now = datetime.now(UTC)
    return [
        cron_record(
            apps.app,
            job_id=f"{prefix}-{index}",
            name=name,
            arguments={},
            cron=cron,
            offset=now,
            next_run_at=next_run,
        )
        for index in range(count)
    ]


async def fill_and_add(count: int, adds: int) -> dict[str, float]:
    """Store ``count`` yearly crons in bulk, then time ``adds`` producer adds."""
    async with apps.app:
        storage = apps.app.configs.storage
        route = route_by_name(apps.app, "bench.jobify_noop")
        if route is None:
            raise RuntimeError("no route bench.jobify_noop")
        next_year = datetime(datetime.now(UTC).year + 1, 1, 1, tzinfo=UTC)
        started = time.perf_counter()
        for start in range(0, count, 5000):
            size = min(5000, count - start)
            batch = _records(size, f"scale{start}", YEARLY, route.name, next_year)
            await storage.add_schedule(*batch)
        fill = time.perf_counter() - started
        times = []
        for index in range(adds):
            began = time.perf_counter()
            await route.schedule().cron(YEARLY, job_id=f"added-{index}")
            times.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        await storage.get_schedules()  # what every add did before: read all
        read_all = (time.perf_counter() - began) * 1000
    return {
        "fill_s": fill,
        "add_p50_ms": statistics.median(times),
        "add_p99_ms": percentile(times, 0.99),
        "read_all_ms": read_all,
    }


def start_beat(tmp: Path, publish_log: str) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = tmp / "beat.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_JOBIFY_CRON": "1",
        "BENCH_PUBLISH_LOG": publish_log,
        "BENCH_PUBLISH_LOG_TASK": "bench.jobify_tick",
    }
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.apps:celery_app", "beat",
        "-s", str(tmp / "beat-schedule"), "-l", "info", "--max-interval", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, log_path


def wait_for_read(log_path: Path, since: float, timeout: float = 600.0) -> float:
    """Seconds from ``since`` until beat logged its first full read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"Read \d+ stored crons in", log_path.read_text(errors="replace")):
            return time.monotonic() - since
        time.sleep(0.1)
    msg = f"beat did not read the storage in {timeout:.0f}s; its log: {log_path}"
    raise RuntimeError(msg)


def lateness(client: redis.Redis, key: str) -> list[float]:
    rows = [json.loads(row) for row in client.lrange(key, 0, -1)]
    rows = [r for r in rows if r["task"] == "bench.jobify_tick"][1:]
    return [
        (float(r["published"]) - datetime.fromisoformat(r["planned"]).timestamp()) * 1000
        for r in rows
    ]


def burst(count: int, due_in: float) -> dict[str, Any]:
    """Store ``count`` crons due on one second and announce them; measure their publish."""
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=due_in)
    cron = Cron("* * * * * * *", start_date=due, max_runs=1)
    ids: list[str] = []

    async def store() -> None:
        async with apps.app:
            storage = apps.app.configs.storage
            for start in range(0, count, 5000):
                size = min(5000, count - start)
                batch = _records(size, f"burst{start}", cron, "bench.cron_burst", due)
                await storage.add_schedule(*batch)
                ids.extend(r.job_id for r in batch)

    asyncio.run(store())
    feed = feed_for(apps.celery_app)
    if feed is None:
        raise RuntimeError("the cron feed needs the Redis result backend")
    feed.announce(ids)
    queue = os.environ["BENCH_BURST_QUEUE"]
    with Connection(apps.celery_app.conf.broker_url) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True, auto_delete=False)
        deadline = due.timestamp() + 60
        depth = 0
        while time.time() < deadline:
            depth = channel.queue_declare(queue, passive=True).message_count
            if depth >= count:
                break
            time.sleep(0.01)
        done = time.time()
        planned: list[str] = []
        seen: set[str] = set()
        twice = 0
        while True:
            message = channel.basic_get(queue, no_ack=True)
            if message is None:
                break
            header = json.loads(message.headers["jobify"])
            cron_id = header["cron"]["job_id"] if "cron" in header else ""
            twice += cron_id in seen
            seen.add(cron_id)
            planned.append(header["exec_at"])
    return {
        "published": depth,
        "after_due_s": done - due.timestamp(),
        "in_order": planned == sorted(planned),
        "twice": twice,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crons", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    crons = 20_000 if args.quick else args.crons
    seconds = min(60, args.seconds) if args.quick else args.seconds
    burst_count = min(2_000, args.burst) if args.quick else args.burst
    client = redis.Redis.from_url(apps.celery_app.conf.result_backend)
    publish_log = f"{os.environ['BENCH_QUEUE']}:publish"
    tmp_dir = tempfile.TemporaryDirectory(prefix="cron-scale-")
    tmp = Path(tmp_dir.name)

    added = asyncio.run(fill_and_add(crons, 300))
    print(f"Run-time crons at scale: {crons} stored (SQLite), plus a 1 s cron")
    print(
        f"  fill {crons} in {added['fill_s']:.1f} s; one add: p50 {added['add_p50_ms']:.2f} ms, "
        f"p99 {added['add_p99_ms']:.2f} ms (goal <= 5); before, each add read all: "
        f"{added['read_all_ms']:.0f} ms"
    )
    began = time.monotonic()
    beat, log_path = start_beat(tmp, publish_log)
    try:
        startup = wait_for_read(log_path, began)
        time.sleep(3.0)
        pss = tree_pss_kib(beat.pid) / 1024
        cpu0, wall0 = sum(tree_cpu_seconds(beat.pid)), time.monotonic()
        time.sleep(seconds)
        cpu = (sum(tree_cpu_seconds(beat.pid)) - cpu0) / (time.monotonic() - wall0)
        late = lateness(client, publish_log)
        print(
            f"  beat: read at start in {startup:.1f} s (goal <= 30), PSS {pss:.0f} MiB, "
            f"idle CPU {cpu * 100:.1f}% of a core (goal <= 5)"
        )
        if late:
            drift = late[-1] - late[0]
            print(
                f"  1 s cron over {seconds} s: {len(late)} ticks, lateness p50 "
                f"{statistics.median(late):.1f} ms, p99 {percentile(late, 0.99):.1f} ms "
                f"(goal <= 50), max {max(late):.1f} ms, drift {drift:+.1f} ms"
            )
        result = burst(burst_count, due_in=15.0)
        if result["published"] < burst_count:
            print(log_path.read_text(errors="replace")[-6000:])  # why not
        print(
            f"  {burst_count} crons due on one second: {result['published']} published, the last "
            f"{result['after_due_s']:.2f} s after it (goal <= 2), in planned order: "
            f"{result['in_order']}, twice: {result['twice']}"
        )
    finally:
        beat.send_signal(signal.SIGTERM)
        try:
            beat.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(beat.pid, signal.SIGKILL)
        client.delete(publish_log)
        delete_queue(apps.celery_app, os.environ["BENCH_BURST_QUEUE"])
        delete_queue(apps.celery_app, apps.QUEUE)
        tmp_dir.cleanup()
        for suffix in ("", "-wal", "-shm"):
            Path(os.environ["BENCH_BEAT_DB"] + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
