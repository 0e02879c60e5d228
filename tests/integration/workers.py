"""Start and stop real `celery worker` and `celery beat` processes for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Log level of the worker and beat processes the tests start (WORKER_LOGLEVEL=debug to dig).
LOG_LEVEL = os.environ.get("WORKER_LOGLEVEL", "info")


class CeleryProcess:
    """A `celery -A module:celery_app ...` subprocess in its own session."""

    def __init__(
        self,
        arguments: list[str],
        *,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", *arguments],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send ``sig`` (warm shutdown by default), then SIGKILL the whole group."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if not self._log.closed:
            self._log.close()
        return self.process.returncode


class WorkerProcess(CeleryProcess):
    """A `celery worker` on the given queues, ready once it answers ping."""

    def __init__(
        self,
        *,
        app_path: str,
        celery_app: Celery,
        queues: list[str],
        node: str,
        pool: str,
        concurrency: int,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        extra_args: list[str] | None = None,
    ) -> None:
        self.celery_app = celery_app
        self.node = node
        # "asyncio": the app picks the pool itself (JobifyCelery(pool="asyncio")
        # sets worker_pool), as a user's worker started without -P does.
        pool_flag = [] if pool == "asyncio" else ["-P", pool]
        arguments = [
            "-A", app_path, "worker", *pool_flag, "-c", str(concurrency),
            "-Q", ",".join(queues), "-n", node, "-l", LOG_LEVEL,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            *(extra_args or []),
        ]  # fmt: skip
        super().__init__(arguments, log_path=log_path, extra_env=extra_env, cwd=cwd)

    def wait_ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"worker {self.node} exited with {self.process.returncode}:\n{self.log()}"
                raise RuntimeError(msg)
            if self.celery_app.control.ping(destination=[self.node], timeout=0.5):
                return
        self.stop()
        msg = f"worker {self.node} did not answer ping in {timeout}s:\n{self.log()}"
        raise RuntimeError(msg)


class BeatProcess(CeleryProcess):
    """A `celery beat` with its own schedule file (JobifyScheduler by default)."""

    def __init__(
        self,
        *,
        app_path: str,
        schedule_path: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        arguments = [
            "-A", app_path, "beat", "-s", str(schedule_path), "--max-interval", "1",
            "-l", LOG_LEVEL,
        ]  # fmt: skip
        super().__init__(arguments, log_path=log_path, extra_env=extra_env)
