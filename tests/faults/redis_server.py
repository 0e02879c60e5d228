"""A private ``redis-server`` a fault test may kill and start again (never the shared one)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import redis

from tests.faults.proxy import free_port

if TYPE_CHECKING:
    from pathlib import Path


class PrivateRedis:
    """One ``redis-server`` on a free loopback port, started in the foreground of a child.

    It keeps its data in an append-only file synced on every write, as a
    result backend in production would: a restart loses the connections,
    not what was stored.
    """

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            msg = "redis-server is not on PATH: the fault tests need it to run a private Redis"
            raise RuntimeError(msg)
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--appendfilename", f"private-{self.port}.aof", "--dir", str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                client.ping()
                client.close()
            except redis.RedisError:
                time.sleep(0.02)
            else:
                return
        msg = f"the private redis-server on port {self.port} did not answer in 10 s"
        raise RuntimeError(msg)

    def kill(self) -> None:
        """SIGKILL the server: every connection breaks, nothing is kept (no persistence)."""
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def restart_after(self, seconds: float) -> None:
        self.kill()
        time.sleep(seconds)
        self.start()

    def close(self) -> None:
        self.kill()
