"""Sentry and OpenTelemetry see jobs run on real workers, in the producer's trace.

The producer and the worker are processes of their own with both SDKs
started (``tests.apps.observed``), writing what they would send to files.
Every pool is tried: a new pool or a change of the publish path that loses
Celery's signals or the trace headers fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tests.integration.conftest import POOL_ENV
from tests.integration.workers import REPO_ROOT, WorkerProcess
from tests.servers import BROKER_URL

pytestmark = pytest.mark.integration


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(read: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio"])
def test_runs_join_the_producers_trace_and_errors_reach_sentry(
    servers: None, pool: str, tmp_path: Path
) -> None:
    from tests.apps import observed

    queue = f"{observed.QUEUE}-{pool}-{uuid.uuid4().hex[:6]}"
    out = str(tmp_path / "observed")
    env = {"OBSERVED_QUEUE": queue, "OBSERVE_OUT": out}
    worker = WorkerProcess(
        app_path="tests.apps.observed:celery_app",
        celery_app=observed.celery_app,
        queues=[queue],
        node=f"{queue}@test",
        pool="custom" if pool in POOL_ENV else pool,
        concurrency=2 if pool != "asyncio" else 20,
        log_path=tmp_path / "worker.log",
        extra_env={**env, "OBSERVE_ROLE": "worker", **POOL_ENV.get(pool, {})},
    )
    try:
        worker.wait_ready()
        produced = subprocess.run(
            [sys.executable, "-m", "tests.apps.observed"],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert produced.returncode == 0, produced.stdout + produced.stderr
        pushed = json.loads(produced.stdout.strip().splitlines()[-1])
        assert pushed["good_result"] == 2
        assert pushed["bad_status"] == "failed"

        spans_path = Path(f"{out}.worker.spans")
        runs = _wait_for(
            lambda: [
                s
                for s in _lines(spans_path)
                if s["name"].startswith("run/") and s["trace_id"] == pushed["otel_trace_id"]
            ],
            "the worker's run spans in the producer's trace",
        )
        assert {s["name"] for s in runs} >= {"run/observed.ok", "run/observed.boom"}

        sentry_path = Path(f"{out}.worker.sentry")
        errors = _wait_for(
            lambda: [
                item["payload"]
                for item in _lines(sentry_path)
                if item["type"] == "event" and item["payload"].get("exception")
            ],
            "the failing job's error in Sentry",
        )
        error = errors[0]
        assert error["exception"]["values"][-1]["type"] == "ValueError"
        assert "boom for the observers" in error["exception"]["values"][-1]["value"]
        assert error["contexts"]["trace"]["trace_id"] == pushed["sentry_trace_id"]
    finally:
        worker.stop()
        with Connection(BROKER_URL) as conn:
            conn.channel().queue_delete(queue)
