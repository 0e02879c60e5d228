"""The processes and records of one beat test: a worker, beats, producers, their runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from tests.apps import clock
from tests.integration.workers import REPO_ROOT, BeatProcess, WorkerProcess

if TYPE_CHECKING:
    from pathlib import Path


class Clock:
    """Processes and records of one beat test."""

    def __init__(self, tmp: Path, db: str | None = None) -> None:
        self.tmp = tmp
        self.run = uuid.uuid4().hex[:10]
        #: An SQLite file, or a PostgreSQL URL (then each test has a table of its own).
        self.db = db or str(tmp / "schedules.db")
        self.table = f"crons_{self.run}"
        self.processes: list[WorkerProcess | BeatProcess] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {"CLOCK_RUN": self.run, "CLOCK_DB": self.db, "CLOCK_TABLE": self.table, **extra}

    def produce(self, *operations: str, at: float = 0.0, feed: str = "on") -> dict[str, Any]:
        """Run ``python -m tests.apps.cron_producer`` (a process of its own) and read its answer.

        ``feed="off"``: the producer announces nothing (a lost announcement).
        """
        completed = subprocess.run(
            [sys.executable, "-m", "tests.apps.cron_producer", f"{at:.6f}", *operations],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO_ROOT),
                **self.env(),
                "CRON_PRODUCER_FEED": feed,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if completed.returncode != 0:
            msg = f"the producer failed:\n{completed.stdout}\n{completed.stderr}"
            raise AssertionError(msg)
        answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        return answer

    def worker(self) -> WorkerProcess:
        process = WorkerProcess(
            app_path="tests.apps.clock:celery_app",
            celery_app=clock.celery_app,
            queues=[clock.QUEUE],
            node=f"{clock.QUEUE}-{uuid.uuid4().hex[:6]}@test",
            pool="threads",
            concurrency=8,
            log_path=self.tmp / f"worker{len(self.processes)}.log",
            extra_env=self.env(),
        )
        self.processes.append(process)
        process.wait_ready()
        return process

    def beat(self, crons: str = "", **env: str) -> BeatProcess:
        index = len(self.processes)
        process = BeatProcess(
            app_path="tests.apps.clock:celery_app",
            schedule_path=self.tmp / f"beat{index}-schedule",
            log_path=self.tmp / f"beat{index}.log",
            extra_env=self.env(CLOCK_CRONS=crons, **env),
        )
        self.processes.append(process)
        return process

    def runs(self, route: str) -> list[dict[str, Any]]:
        return clock.runs(self.run, route)

    def wait_runs(self, route: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.runs(route)) < count:
            if time.monotonic() > deadline:
                logs = "\n".join(p.log()[-3000:] for p in self.processes)
                msg = f"{route}: {len(self.runs(route))} runs, expected {count}\n{logs}"
                raise AssertionError(msg)
            time.sleep(0.05)
        return self.runs(route)
