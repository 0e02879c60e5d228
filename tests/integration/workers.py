"""Start and stop real `celery worker` processes for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from celery import Celery

REPO_ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """A `celery -A module:celery_app worker` subprocess in its own session."""

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
    ) -> None:
        self.celery_app = celery_app
        self.node = node
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})}
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app_path,
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            ",".join(queues),
            "-n",
            node,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "info",
        ]
        self.process = subprocess.Popen(  # noqa: S603
            command,
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

    def wait_ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"worker {self.node} exited with {self.process.returncode}:\n{self.log()}"
                raise RuntimeError(msg)
            replies = self.celery_app.control.ping(destination=[self.node], timeout=0.5)
            if replies:
                return
        self.stop()
        msg = f"worker {self.node} did not answer ping in {timeout}s:\n{self.log()}"
        raise RuntimeError(msg)

    def stop(self, timeout: float = 20.0) -> int | None:
        """Warm shutdown (SIGTERM), then SIGKILL the whole process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self._log.close()
        return self.process.returncode


class BeatProcess:
    """A `celery -A module:celery_app beat` subprocess in its own session."""

    def __init__(
        self,
        *,
        app_path: str,
        schedule_path: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})}
        command = [
            sys.executable, "-m", "celery", "-A", app_path, "beat",
            "-s", str(schedule_path), "--max-interval", "1", "-l", "info",
        ]  # fmt: skip
        self.process = subprocess.Popen(  # noqa: S603
            command,
            cwd=REPO_ROOT,
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
