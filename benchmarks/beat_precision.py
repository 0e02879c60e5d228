"""1 s cron tick precision: JobifyScheduler beside plain Celery beat, same run.

    python -m benchmarks.beat_precision [--seconds 600] [--quick]

Two beat processes on RabbitMQ + Redis run at the same time: one fires a
Jobify 7-field cron (``* * * * * * *``), the other a plain Celery beat entry
with a 1 s interval. Each records when it publishes (``before_task_publish``).
Lateness: jobify = publish time - the tick's planned second; Celery = publish
time - the 1 s grid anchored at its first publish (Celery's interval entries
have no planned second). Drift = lateness of the last tick minus the first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
BACKEND = os.environ.get("RESULT_BACKEND", "redis://127.0.0.1:6379/0")


def start_beat(
    tmp: Path, name: str, log_key: str, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_QUEUE": f"jobify-celery-bench-beat-{os.getpid()}",
        "BENCH_PUBLISH_LOG": log_key,
        **extra,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.apps:celery_app", "beat",
        "-s", str(tmp / f"{name}-schedule"), "-l", "warning", "--max-interval", "1",
    ]  # fmt: skip
    if name == "celery":
        command += ["-S", "celery.beat:PersistentScheduler"]
    # Output to a file in the run's temporary directory (banners, warnings).
    with (tmp / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def read(client: redis.Redis, key: str) -> list[dict[str, object]]:
    return [json.loads(row) for row in client.lrange(key, 0, -1)]


def lateness_ms(rows: list[dict[str, object]], *, jobify: bool) -> list[float]:
    published = [float(r["published"]) for r in rows]  # type: ignore[arg-type]
    if jobify:
        planned = [datetime.fromisoformat(str(r["planned"])).timestamp() for r in rows]
    else:
        planned = [published[0] + i for i in range(len(published))]
    return [(p - q) * 1000 for p, q in zip(published, planned, strict=True)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds = 30 if args.quick else args.seconds
    client = redis.Redis.from_url(BACKEND)
    run = f"jobify-celery-bench-beat:{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        jobify_beat = start_beat(
            tmp,
            "jobify",
            f"{run}:jobify",
            {"BENCH_JOBIFY_CRON": "1", "BENCH_BEAT_DB": str(tmp / "beat.db")},
        )
        celery_beat = start_beat(tmp, "celery", f"{run}:celery", {"BENCH_PLAIN_BEAT": "1"})
        try:
            time.sleep(seconds + 5)
        finally:
            stop(jobify_beat)
            stop(celery_beat)
    jobify_rows = [r for r in read(client, f"{run}:jobify") if r["task"] == "bench.jobify_tick"]
    celery_rows = [r for r in read(client, f"{run}:celery") if r["task"] == "bench.beat_noop"]
    # Leave out each beat's start-up second.
    results = {
        "celery": lateness_ms(celery_rows[1:], jobify=False),
        "jobify": lateness_ms(jobify_rows[1:], jobify=True),
    }
    print(f"1 s tick publish lateness over ~{seconds}s, RabbitMQ + Redis, both beats at once")
    print(f"{'':8} {'ticks':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'drift ms':>9}")
    for name, values in results.items():
        drift = values[-1] - values[0] if values else float("nan")
        print(
            f"{name:8} {len(values):6d} {statistics.median(values):8.1f} "
            f"{percentile(values, 0.99):8.1f} {max(values):8.1f} {drift:9.1f}"
        )
    ratio = percentile(results["jobify"], 0.99) / max(percentile(results["celery"], 0.99), 1e-9)
    print(f"p99 ratio jobify/celery: {ratio:.2f}")


if __name__ == "__main__":
    main()
